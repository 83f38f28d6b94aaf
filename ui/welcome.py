"""The first screen: drop a folder (or choose one), open the demo, or reopen a recent project."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QVBoxLayout, QWidget)

from studio.runs import demo
from studio.config import ConfigError
from studio.runs.project import Project
from ui import theme


def dataset_of(project: str) -> str:
    """The images folder a recent project trains on (what the artist recognises)."""
    try:
        p = Project(Path(project))
        return str(p.resolve(p.load_config().dataset_dir))
    except (OSError, ConfigError):
        return "(settings unreadable)"


class Welcome(QWidget):
    choose_folder = Signal()
    open_demo = Signal()
    open_recent = Signal(object)  # Path

    def __init__(self, parent=None):
        super().__init__(parent)
        title = QLabel("LoRA Studio")
        title.setStyleSheet("font-size: 26pt; font-weight: bold;")
        subtitle = QLabel("Teach Stable Diffusion your style: 50–200 of your images in, a "
                          "<b>.safetensors</b> LoRA out, on your own machine.")
        subtitle.setWordWrap(True)
        theme.set_role(subtitle, "muted")

        drop = QFrame()
        drop.setObjectName("dropzone")
        drop.setStyleSheet(f"#dropzone {{ border: 2px dashed {theme.MUTED}; border-radius: 12px; "
                           f"}}")
        drop.setMinimumHeight(200)
        drop_text = QLabel("<span style='font-size:15pt'><b>Drop a folder of your images "
                           "here</b></span><br>PNG, JPG or WebP, ideally with a .txt caption "
                           "beside each image. Your files are only read, never changed.")
        drop_text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        drop_text.setWordWrap(True)
        choose = QPushButton("Choose images folder…")
        theme.set_role(choose, "primary")
        choose.setToolTip("Pick the folder that holds your images (Ctrl+O).")
        choose.clicked.connect(self.choose_folder)
        self.demo_button = QPushButton("Open the demo project")
        self.demo_button.setToolTip("A small bundled style set and model that trains on a CPU in "
                                    "minutes: a safe way to try everything.")
        self.demo_button.clicked.connect(self.open_demo)
        self.demo_note = QLabel()
        self.demo_note.setWordWrap(True)
        self.demo_note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        theme.set_role(self.demo_note, "muted")
        row = QHBoxLayout()
        row.addStretch()
        row.addWidget(choose)
        row.addWidget(self.demo_button)
        row.addStretch()
        drop_layout = QVBoxLayout(drop)
        drop_layout.addStretch()
        drop_layout.addWidget(drop_text)
        drop_layout.addSpacing(12)
        drop_layout.addLayout(row)
        drop_layout.addWidget(self.demo_note)
        drop_layout.addStretch()

        self.recent_title = QLabel("<b>Recent projects</b>")
        self.recent = QListWidget()
        self.recent.setToolTip("Double-click to reopen.")
        self.recent.itemActivated.connect(
            lambda item: self.open_recent.emit(Path(item.data(Qt.ItemDataRole.UserRole))))

        column = QVBoxLayout()
        column.addStretch(1)
        column.addWidget(title)
        column.addWidget(subtitle)
        column.addSpacing(16)
        column.addWidget(drop)
        column.addSpacing(12)
        column.addWidget(self.recent_title)
        column.addWidget(self.recent)
        column.addStretch(1)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(column, 3)
        outer.addStretch(1)
        self.update_demo_state()

    def update_demo_state(self) -> None:
        present = demo.assets_present()
        self.demo_button.setEnabled(present)
        self.demo_note.setText("" if present else
                               "The demo assets (pocket model and demo style set) are not "
                               "installed in this copy yet; run scripts/bootstrap.py demo once.")
        self.demo_note.setVisible(not present)

    def set_recent(self, projects: list[str]) -> None:
        self.recent.clear()
        for path in projects:
            item = QListWidgetItem(f"{Path(path).name}    —    images: {dataset_of(path)}")
            item.setToolTip(f"Project folder: {path}")
            item.setData(Qt.ItemDataRole.UserRole, path)
            self.recent.addItem(item)
        self.recent.setVisible(bool(projects))
        self.recent_title.setVisible(bool(projects))
        self.recent.setMaximumHeight(max(60, min(len(projects), 6) * 26 + 8))
