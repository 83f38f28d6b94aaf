"""An epoch × strength grid at any size, with its row and column labels drawn in the GUI's font.

The worker's PNG carries its own labels, sized for the full image (unreadable once a grid of
512 px cells is scaled into a window); this widget shows only the cells part of that image and
draws the labels beside it at screen size — wrapped onto two lines and shrunk when a column is
narrow, never cut or overlapping. Small cells are enlarged with crisp pixels (ui/widgets/pixels.py).
Without labels it shows the whole image."""

from __future__ import annotations

from PySide6.QtCore import QRect, QRectF, QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

from studio import grid
from ui.widgets import pixels

GAP = 8
MIN_POINT_SIZE = 6.0
WRAP = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom | Qt.TextFlag.TextWordWrap


def label_font(base: QFont, texts: list[str], width: float, lines: int = 2) -> QFont:
    """The largest font (down to MIN_POINT_SIZE) at which every text fits `width` in `lines` lines."""
    font = QFont(base)
    size = font.pointSizeF() if font.pointSizeF() > 0 else 9.0
    while True:
        font.setPointSizeF(size)
        metrics = QFontMetrics(font)
        box = QRect(0, 0, max(1, int(width)), 10_000)
        if all(metrics.boundingRect(box, int(WRAP), t).height() <= lines * metrics.height()
               and metrics.boundingRect(box, int(WRAP), t).width() <= width for t in texts) \
                or size <= MIN_POINT_SIZE:
            return font
        size = max(MIN_POINT_SIZE, size - 0.5)


class GridPreview(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.pixmap: QPixmap | None = None
        self.rows: list[str] = []
        self.cols: list[str] = []
        self.source = QRect()
        self.message = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(200, 160)

    def sizeHint(self) -> QSize:
        return QSize(640, 420)

    def set_message(self, text: str) -> None:
        self.pixmap, self.message = None, text
        self.update()

    def set_grid(self, pixmap: QPixmap, rows: list[str] | None = None,
                 cols: list[str] | None = None, cell: tuple[int, int] | None = None) -> None:
        """`cell`: one cell's size in the image; the cells sit at its bottom right corner."""
        self.pixmap, self.message = pixmap, "The grid image could not be read."
        self.rows, self.cols = list(rows or []), list(cols or [])
        self.source = pixmap.rect()
        if self.rows and self.cols and cell and not pixmap.isNull():
            shown = grid.shown_cell(cell)  # the saved grid enlarges small cells (studio/grid.py)
            w, h = len(self.cols) * shown[0], len(self.rows) * shown[1]
            if w <= pixmap.width() and h <= pixmap.height():
                self.source = QRect(pixmap.width() - w, pixmap.height() - h, w, h)
            else:
                self.rows, self.cols = [], []  # not the layout expected: show it as it is
        else:
            self.rows, self.cols = [], []
        self.update()

    def labelled(self) -> bool:
        return bool(self.rows and self.cols)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
        if self.pixmap is None or self.pixmap.isNull():
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.rect().adjusted(12, 12, -12, -12),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self.message)
            return
        metrics = self.fontMetrics()
        left = max((metrics.horizontalAdvance(t) for t in self.rows), default=0)
        left = left + 2 * GAP if self.labelled() else 0
        top = 2 * metrics.height() + GAP if self.labelled() else 0
        area = self.rect().adjusted(left, top, 0, 0)
        scale = pixels.fit_scale(self.source.size(), area.size())
        target = pixels.placed(self.source.size(), area, scale)
        pixels.draw(painter, target, self.pixmap, self.source)
        if not self.labelled():
            return
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        cw = target.width() / len(self.cols)
        ch = target.height() / len(self.rows)
        painter.setFont(label_font(self.font(), self.cols, cw - 4))
        for c, text in enumerate(self.cols):
            box = QRectF(target.left() + c * cw + 2, target.top() - top, cw - 4, top - 2)
            painter.drawText(box, int(WRAP), text)
        painter.setFont(self.font())
        for r, text in enumerate(self.rows):
            box = QRectF(target.left() - left, target.top() + r * ch, left - GAP, ch)
            painter.drawText(box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             text)
