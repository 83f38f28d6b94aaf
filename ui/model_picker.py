"""Base model picker: a folder, a file or a Hub id (editable, with recent models), and what it
is, in the words of the worker's own verdict (studio.base_model.inspect)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QMenu,
                               QPushButton, QVBoxLayout, QWidget)

from studio import estimate
from studio.runs import demo
from studio.base_model import inspect as base_model
from studio.base_model.inspect import ModelInfo
from studio.config import FIELDS
from ui import theme

# Combo boxes sized by a few characters, not by their longest entry (a long path would
# otherwise widen the whole settings column).
SHRINKABLE = QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon


class ModelPicker(QWidget):
    """`changed(value, info)` fires when the chosen model changes (debounced while typing)."""

    changed = Signal(str, object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.project_root: Path | None = None
        self.prediction_type = "auto"  # the Prediction type setting: an SD2 file may need it
        self.info = ModelInfo(None, "", "No base model chosen.")
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        # A long model path must not widen the whole settings column.
        self.combo.setSizeAdjustPolicy(SHRINKABLE)
        self.combo.setMinimumContentsLength(12)
        self.combo.setToolTip(FIELDS["base_model"].metadata["help"] + " Recent models are in "
                              "the list.")
        self.combo.lineEdit().setPlaceholderText("Model folder, file or Hub id")
        self.combo.currentTextChanged.connect(lambda _: self._timer.start())
        folder = QPushButton("Folder…")
        folder.setToolTip("Choose a diffusers model folder (it contains model_index.json, unet/, "
                          "vae/ and text_encoder/).")
        folder.clicked.connect(self._choose_folder)
        file = QPushButton("File…")
        file.setToolTip("Choose a single-file .safetensors checkpoint.")
        file.clicked.connect(self._choose_file)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self._timer = QTimer(self, singleShot=True, interval=300, timeout=self._inspect)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(folder)
        row.addWidget(file)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        # The bundled pocket model trains in minutes on a CPU but only at 64 px: say so, and
        # offer the way to a real model (issue 14).
        self.pocket_note = QLabel("The pocket model is a small <b>64 px demo model</b>: it shows "
                                  "how training works in minutes, not what your style looks like "
                                  "in a real Stable Diffusion model.")
        self.pocket_note.setWordWrap(True)
        theme.set_role(self.pocket_note, "warning")
        self.own_model = QPushButton("Choose your own SD model…")
        self.own_model.setToolTip("A Stable Diffusion 1.5, 2.x or SDXL model: a .safetensors "
                                  "file or a diffusers folder.")
        menu = QMenu(self.own_model)
        menu.addAction("A .safetensors file…", self._choose_file)
        menu.addAction("A diffusers folder…", self._choose_folder)
        self.own_model.setMenu(menu)
        note = QHBoxLayout()
        note.setContentsMargins(0, 0, 0, 0)
        note.addWidget(self.pocket_note, 1)
        note.addWidget(self.own_model)
        layout.addLayout(note)
        self._show_pocket_note(False)

    def set_recent(self, models: list[str]) -> None:
        text = self.value()
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(models)
        self.combo.setEditText(text)
        self.combo.blockSignals(False)

    def set_value(self, value: str, project_root: Path | None = None) -> None:
        self.project_root = project_root
        self.combo.blockSignals(True)
        self.combo.setEditText(value)
        self.combo.blockSignals(False)
        self._inspect(emit=False)

    def set_prediction_type(self, value: str) -> None:
        """Re-judge the model under another Prediction type setting (no `changed` signal)."""
        if value != self.prediction_type:
            self.prediction_type = value
            self._inspect(emit=False)

    def value(self) -> str:
        return self.combo.currentText().strip()

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the base model folder",
                                                self._start_dir())
        if path:
            self.combo.setEditText(path)
            self._inspect()

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a base model file", self._start_dir(),
                                              "Safetensors checkpoints (*.safetensors)")
        if path:
            self.combo.setEditText(path)
            self._inspect()

    def _start_dir(self) -> str:
        current = Path(self.value()).expanduser()
        return str(current.parent if current.exists() else Path.home())

    def is_pocket_model(self) -> bool:
        value = self.value()
        if not value:
            return False
        path = Path(value).expanduser()
        if not path.is_absolute() and self.project_root is not None:
            path = self.project_root / path
        try:
            return path.resolve() == demo.POCKET_MODEL.resolve()
        except OSError:
            return False

    def _show_pocket_note(self, on: bool) -> None:
        self.pocket_note.setVisible(on)
        self.own_model.setVisible(on)

    def _inspect(self, emit: bool = True) -> None:
        self._timer.stop()
        self.info = base_model.inspect(self.value(), self.project_root, self.prediction_type)
        self.status.setToolTip("\n".join(self.info.notes))
        if self.info.ok:
            params = (f" · UNet {estimate.human_count(self.info.unet_params)} parameters"
                      if self.info.unet_params else "")
            self.status.setText(f"✓ {self.info.summary}{params}")
            theme.set_role(self.status, "muted")
        else:
            arch = f"{self.info.architecture}: " if self.info.architecture else ""
            self.status.setText(arch + self.info.problem)
            theme.set_role(self.status, "error")
        self._show_pocket_note(self.is_pocket_model())
        if emit:
            self.changed.emit(self.value(), self.info)
