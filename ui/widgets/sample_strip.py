"""The latest sample images of a run in a row (click one to open it at full size)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QToolButton, QVBoxLayout, QWidget

from ui import theme
from ui.thumbnails import ThumbnailLoader

SAMPLE_PX = 96


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
        scroll.setFixedHeight(SAMPLE_PX + 24)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(scroll)
        self.buttons: dict[str, QToolButton] = {}

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
            button = QToolButton()
            button.setIconSize(QSize(SAMPLE_PX, SAMPLE_PX))
            button.setFixedSize(SAMPLE_PX + 8, SAMPLE_PX + 8)
            prompt = prompts[i] if i < len(prompts) else ""
            button.setToolTip(f"{prompt}\n\n{Path(path).name}: click to open at full size")
            button.clicked.connect(lambda _=False, p=path: QDesktopServices.openUrl(
                QUrl.fromLocalFile(p)))
            self.row.insertWidget(self.row.count() - 1, button)
            self.buttons[path] = button
            self._on_ready(path, SAMPLE_PX)

    def _on_ready(self, path: str, size: int) -> None:
        button = self.buttons.get(path)
        if button is not None and size == SAMPLE_PX:
            pixmap = self.loader.get(Path(path), SAMPLE_PX)
            if pixmap is not None:
                button.setIcon(pixmap)
