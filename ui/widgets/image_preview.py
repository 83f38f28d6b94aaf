"""An image scaled to its pane (crisp whole-number enlargement, smooth reduction), with zoom
(Fit / 100 / 200 / 400 %, right-click or Ctrl+wheel), drag to pan, and double-click for the in-app
full-size viewer; a centred message when there is no image."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QMenu, QSizePolicy, QWidget

from ui.widgets import pixels


class ImagePreview(QWidget):
    zoom_changed = Signal(object)  # None (fit) or the scale

    def __init__(self, parent=None, viewer: bool = True):
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self._message = ""
        self.zoom: float | None = None
        self.offset = QPoint()
        self._drag: QPoint | None = None
        self._viewer = viewer
        self.title = ""  # the full-size viewer's window title
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 160)
        self.setToolTip("Right-click or Ctrl+wheel to zoom, drag to move, double-click to open "
                        "at full size.")

    def sizeHint(self) -> QSize:
        return QSize(420, 420)

    def pixmap(self) -> QPixmap | None:
        return self._pixmap

    def set_pixmap(self, pixmap: QPixmap | None, message: str = "") -> None:
        self._pixmap, self._message = pixmap, message
        self.offset = QPoint()
        self.update()

    def set_zoom(self, zoom: float | None) -> None:
        self.zoom, self.offset = zoom, QPoint()
        self.zoom_changed.emit(zoom)
        self.update()

    def scale(self) -> float:
        if self._pixmap is None or self._pixmap.isNull():
            return 1.0
        return pixels.scale_for(self._pixmap.size(), self.size(), self.zoom)

    def image_rect(self) -> QRect:
        """Where the image is drawn in the widget (may extend past it when zoomed in)."""
        if self._pixmap is None or self._pixmap.isNull():
            return QRect()
        return pixels.placed(self._pixmap.size(), self.rect(), self.scale()).translated(self.offset)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Base))
        if self._pixmap is not None and not self._pixmap.isNull():
            pixels.draw(painter, self.image_rect(), self._pixmap)
        elif self._message:
            painter.setPen(QColor(self.palette().color(QPalette.ColorRole.PlaceholderText)))
            painter.drawText(self.rect().adjusted(12, 12, -12, -12),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._message)

    # --- zoom and pan ----------------------------------------------------------------------------
    def contextMenuEvent(self, event) -> None:
        if self._pixmap is None or self._pixmap.isNull():
            return
        menu = QMenu(self)
        for zoom in pixels.ZOOMS:
            action = menu.addAction(pixels.ZOOM_NAMES[zoom])
            action.setCheckable(True)
            action.setChecked(zoom == self.zoom)
            action.triggered.connect(lambda _=False, z=zoom: self.set_zoom(z))
        if self._viewer:
            menu.addSeparator()
            menu.addAction("Open full size…").triggered.connect(self.open_viewer)
        menu.exec(event.globalPos())

    def wheelEvent(self, event) -> None:
        if not event.modifiers() & Qt.KeyboardModifier.ControlModifier or self._pixmap is None:
            return super().wheelEvent(event)
        levels = [self.scale(), *[z for z in pixels.ZOOMS if z]]
        now = self.scale()
        bigger = sorted({z for z in levels if z > now + 1e-6})
        smaller = sorted({z for z in levels if z < now - 1e-6})
        if event.angleDelta().y() > 0 and bigger:
            self.set_zoom(bigger[0])
        elif event.angleDelta().y() < 0:
            self.set_zoom(smaller[-1] if smaller and smaller[-1] >= 1 else None)

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag = event.position().toPoint()

    def mouseMoveEvent(self, event) -> None:
        if self._drag is not None and self.zoom is not None:
            now = event.position().toPoint()
            self.offset += now - self._drag
            self._drag = now
            self.update()

    def mouseReleaseEvent(self, event) -> None:
        self._drag = None

    def mouseDoubleClickEvent(self, event) -> None:
        if self._viewer:
            self.open_viewer()

    def open_viewer(self) -> None:
        if self._pixmap is None or self._pixmap.isNull():
            return
        from ui.widgets.image_viewer import ImageViewer

        ImageViewer.show_pixmap(self._pixmap, self.title or "Image", self)
