"""A tiny horizontal bar chart (label, bar, count), e.g. the aspect-ratio bucket histogram."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QWidget

from ui import theme

ROW = 18  # px per bar


class Bars(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._data: list[tuple[str, int]] = []

    def set_data(self, data: dict[str, int]) -> None:
        self._data = list(data.items())
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(220, max(1, len(self._data)) * ROW + 4)

    def minimumSizeHint(self) -> QSize:
        return QSize(140, max(1, len(self._data)) * ROW + 4)

    def paintEvent(self, event) -> None:
        if not self._data:
            return
        painter = QPainter(self)
        metrics = self.fontMetrics()
        label_w = max(metrics.horizontalAdvance(label) for label, _ in self._data) + 8
        count_w = max(metrics.horizontalAdvance(str(n)) for _, n in self._data) + 8
        biggest = max(n for _, n in self._data) or 1
        span = max(10, self.width() - label_w - count_w)
        text = self.palette().color(QPalette.ColorRole.Text)
        for row, (label, n) in enumerate(self._data):
            y = 2 + row * ROW
            painter.setPen(text)
            painter.drawText(QRect(0, y, label_w - 6, ROW), Qt.AlignmentFlag.AlignRight |
                             Qt.AlignmentFlag.AlignVCenter, label)
            painter.fillRect(QRect(label_w, y + 4, max(2, int(span * n / biggest)), ROW - 8),
                             QColor(theme.ACCENT))
            painter.drawText(QRect(label_w + int(span * n / biggest) + 4, y, count_w, ROW),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, str(n))
