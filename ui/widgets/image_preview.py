"""A pixmap fitted into the widget at any size, with a centred message when there is none."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget


class ImagePreview(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self._message = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 160)

    def sizeHint(self) -> QSize:
        return QSize(420, 420)

    def set_pixmap(self, pixmap: QPixmap | None, message: str = "") -> None:
        self._pixmap, self._message = pixmap, message
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Base))
        if self._pixmap is not None and not self._pixmap.isNull():
            size = self._pixmap.size()
            if size.width() > self.width() or size.height() > self.height():
                size = size.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, size.width(), size.height())
            target.moveCenter(self.rect().center())
            painter.drawPixmap(target, self._pixmap)
        elif self._message:
            painter.setPen(QColor(self.palette().color(QPalette.ColorRole.PlaceholderText)))
            painter.drawText(self.rect().adjusted(12, 12, -12, -12),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._message)
