"""The latest sample images of a run in a row, large enough to judge texture (small models' images
enlarged with crisp pixels); click one to open it in the in-app full-size viewer."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from ui import theme
from ui.thumbnails import ThumbnailLoader
from ui.widgets import pixels

SAMPLE_PX = 192


class SampleTile(QWidget):
    """One sample, scaled into a square tile by the same rule as every image view."""

    clicked = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.pixmap: QPixmap | None = None
        self.setFixedSize(SAMPLE_PX + 8, SAMPLE_PX + 8)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def set_pixmap(self, pixmap: QPixmap) -> None:
        self.pixmap = pixmap
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Base))
        if self.pixmap is not None and not self.pixmap.isNull():
            area = self.rect().adjusted(4, 4, -4, -4)
            scale = pixels.fit_scale(self.pixmap.size(), area.size())
            pixels.draw(painter, pixels.placed(self.pixmap.size(), area, scale), self.pixmap)

    def mouseReleaseEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()


class SampleStrip(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.loader = ThumbnailLoader(limit=64, parent=self)
        self.loader.ready.connect(self._on_ready)
        self.title = QLabel("<b>Samples</b>")
        self.note = QLabel("Sample images appear here during training.")
        theme.set_role(self.note, "muted")
        self.row = QHBoxLayout()
        self.row.setContentsMargins(0, 0, 0, 0)
        self.row.addWidget(self.note)
        self.row.addStretch()
        inner = QWidget()
        inner.setLayout(self.row)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setFixedHeight(SAMPLE_PX + 28)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(scroll)
        self.buttons: dict[str, SampleTile] = {}

    def clear(self) -> None:
        for button in self.buttons.values():
            # Out of the layout and hidden now; deleteLater alone leaves it on screen until the
            # event loop next runs deferred deletes.
            self.row.removeWidget(button)
            button.hide()
            button.deleteLater()
        self.buttons.clear()
        self.title.setText("<b>Samples</b>")
        self.note.show()

    def show_samples(self, step: int, epoch: int, paths: list[str], prompts: list[str]) -> None:
        self.clear()
        self.note.hide()
        self.title.setText(f"<b>Samples</b> at step {step:,} (epoch {epoch})")
        for i, path in enumerate(paths):
            button = SampleTile()
            prompt = prompts[i] if i < len(prompts) else ""
            button.setToolTip(f"{prompt}\n\n{Path(path).name}: click to open at full size")
            button.clicked.connect(lambda p=path: self.open_full(p))
            self.row.insertWidget(self.row.count() - 1, button)
            self.buttons[path] = button
            self._on_ready(path, SAMPLE_PX)

    def _on_ready(self, path: str, size: int) -> None:
        button = self.buttons.get(path)
        if button is not None and size == SAMPLE_PX:
            pixmap = self.loader.get(Path(path), SAMPLE_PX)
            if pixmap is not None:
                button.set_pixmap(pixmap)

    def open_full(self, path: str) -> None:
        from ui.widgets.image_viewer import ImageViewer

        ImageViewer.show_file(Path(path), self)
