"""An epoch × strength grid at any size, with its row and column labels drawn in the GUI's font.

The worker's PNG carries its own labels, sized for the full image (unreadable once a grid of
512 px cells is scaled into a window); this widget shows only the cells part of that image and
draws the labels beside it at screen size. Without labels it shows the whole image."""

from __future__ import annotations

from PySide6.QtCore import QRect, QRectF, QSize, Qt
from PySide6.QtGui import QFont, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

GAP = 8


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
            w, h = len(self.cols) * cell[0], len(self.rows) * cell[1]
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
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
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
        top = metrics.height() + GAP if self.labelled() else 0
        area = self.rect().adjusted(left, top, 0, 0)
        size = self.source.size()
        if size.width() > area.width() or size.height() > area.height():
            size = size.scaled(area.size(), Qt.AspectRatioMode.KeepAspectRatio)
        target = QRect(0, 0, size.width(), size.height())
        target.moveCenter(area.center())
        painter.drawPixmap(target, self.pixmap, self.source)
        if not self.labelled():
            return
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        font = QFont(self.font())
        painter.setFont(font)
        cw = target.width() / len(self.cols)
        ch = target.height() / len(self.rows)
        for c, text in enumerate(self.cols):
            box = QRectF(target.left() + c * cw, target.top() - top, cw, top - 2)
            painter.drawText(box, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom,
                             metrics.elidedText(text, Qt.TextElideMode.ElideRight, int(cw)))
        for r, text in enumerate(self.rows):
            box = QRectF(target.left() - left, target.top() + r * ch, left - GAP, ch)
            painter.drawText(box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             text)
