"""The in-app full-size viewer: one image in its own window with Fit / 100 / 200 / 400 % and a save
button's worth of information (size, zoom), so "Open full size" works without an external viewer."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import QButtonGroup, QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ui.widgets import pixels
from ui.widgets.image_preview import ImagePreview


class ImageViewer(QDialog):
    def __init__(self, pixmap: QPixmap, title: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.view = ImagePreview(viewer=False)
        self.view.title = title
        self.view.set_pixmap(pixmap)
        self.info = QLabel()
        bar = QHBoxLayout()
        self.zoom_buttons = QButtonGroup(self)
        for zoom in pixels.ZOOMS:
            button = QPushButton(pixels.ZOOM_NAMES[zoom])
            button.setCheckable(True)
            button.setChecked(zoom is None)
            button.clicked.connect(lambda _=False, z=zoom: self.view.set_zoom(z))
            self.zoom_buttons.addButton(button)
            bar.addWidget(button)
        bar.addStretch()
        bar.addWidget(self.info)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(bar)
        self.view.zoom_changed.connect(self._on_zoom)
        for keys, zoom in (("0", None), ("1", 1.0), ("2", 2.0), ("4", 4.0)):
            QShortcut(QKeySequence(keys), self, activated=lambda z=zoom: self.view.set_zoom(z))
        screen = self.screen().availableGeometry() if self.screen() else None
        want_w, want_h = max(640, pixmap.width() + 40), max(520, pixmap.height() + 80)
        if screen is not None:
            want_w, want_h = min(want_w, int(screen.width() * 0.9)), min(
                want_h, int(screen.height() * 0.9))
        self.resize(want_w, want_h)
        self._on_zoom(None)

    def _on_zoom(self, zoom) -> None:
        for button in self.zoom_buttons.buttons():
            button.setChecked(button.text() == pixels.ZOOM_NAMES[zoom])
        pix = self.view.pixmap()
        size = f"{pix.width()}×{pix.height()} px" if pix is not None else ""
        self.info.setText(f"{size} · shown at {round(self.view.scale() * 100)} %")

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._on_zoom(self.view.zoom)

    @classmethod
    def show_pixmap(cls, pixmap: QPixmap, title: str, parent=None) -> "ImageViewer":
        viewer = cls(pixmap, title, parent)
        viewer.show()
        return viewer

    @classmethod
    def show_file(cls, path: Path, parent=None) -> "ImageViewer | None":
        pixmap = QPixmap(str(path))
        if pixmap.isNull():
            return None
        return cls.show_pixmap(pixmap, Path(path).name, parent)
