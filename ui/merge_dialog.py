"""Merge ("bake in"): write a full model with the enabled LoRAs fused in at their strengths, as one
.safetensors file (AUTOMATIC1111, Forge, ComfyUI) or a diffusers folder."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QRadioButton, QVBoxLayout)

from studio.base_model.inspect import inspect
from ui import theme

FORMATS = {"safetensors": "One .safetensors file (AUTOMATIC1111, Forge, ComfyUI)",
           "diffusers": "A diffusers folder (for Python scripts and diffusers-based apps)"}
# training/ldm_convert.py writes SD1.x and SDXL files; SD2's OpenCLIP layout is folder-only.
SINGLE_FILE_FAMILIES = ("sd1", "sdxl")


def default_name(base_model: str, adapters: list[tuple[Path, float, str]]) -> str:
    base = Path(base_model.rstrip("/\\")).stem or "model"
    loras = "+".join(f"{name}-{strength:g}" for _, strength, name in adapters)
    return f"{base}+{loras}"


class MergeDialog(QDialog):
    def __init__(self, base_model: str, adapters: list[tuple[Path, float, str]],
                 out_folder: Path, parent=None, project_root: Path | None = None):
        super().__init__(parent)
        info = inspect(base_model, project_root)
        self.setWindowTitle("Bake the LoRA into a model")
        self.setMinimumWidth(560)
        self.adapters = adapters
        what = "<br>".join(f"• <b>{name}</b> at strength {strength:g}"
                           for _, strength, name in adapters)
        intro = QLabel(f"A full model with these LoRAs fused into its weights, so it draws like "
                       f"base + LoRA without loading the LoRA:<br>{what}<br>"
                       f"Base model: {Path(base_model).name}"
                       + (f" ({info.architecture})" if info.architecture else ""))
        intro.setWordWrap(True)
        self.format_group = QButtonGroup(self)
        formats = QVBoxLayout()
        folder_only = bool(info.family) and info.family not in SINGLE_FILE_FAMILIES
        for key, label in FORMATS.items():
            button = QRadioButton(label)
            button.setProperty("format", key)
            button.setChecked(key == ("diffusers" if folder_only else "safetensors"))
            if key == "safetensors" and folder_only:
                button.setEnabled(False)
                button.setToolTip(f"{info.architecture} models bake into a diffusers folder only.")
            self.format_group.addButton(button)
            formats.addWidget(button)
        self.format_group.buttonToggled.connect(lambda *_: self._fix_suffix())
        self.precision = QComboBox()
        self.precision.addItem("fp16 (half the size; what A1111 and ComfyUI use)", "fp16")
        self.precision.addItem("fp32 (full precision, twice the size)", "fp32")
        self.out = QLineEdit(str(out_folder / default_name(base_model, adapters)))
        self._fix_suffix()
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(browse)
        note = QLabel("Merging loads the full model in memory and takes a while; generation "
                      "waits until it is done.")
        note.setWordWrap(True)
        theme.set_role(note, "muted")
        form = QFormLayout()
        form.addRow("Format:", formats)
        form.addRow("Precision:", self.precision)
        form.addRow("Save to:", out_row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok |
                                   QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Merge")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)

    def format(self) -> str:
        return self.format_group.checkedButton().property("format")

    def set_format(self, key: str) -> None:
        for button in self.format_group.buttons():
            button.setChecked(button.property("format") == key)

    def _fix_suffix(self) -> None:
        path = Path(self.out.text())
        if self.format() == "diffusers" and path.suffix.lower() == ".safetensors":
            self.out.setText(str(path.with_suffix("")))
        elif self.format() == "safetensors" and path.suffix.lower() != ".safetensors":
            self.out.setText(str(path) + ".safetensors")

    def _browse(self) -> None:
        if self.format() == "diffusers":
            chosen = QFileDialog.getExistingDirectory(self, "Folder to put the model folder in",
                                                      str(Path(self.out.text()).parent))
            if chosen:
                self.out.setText(str(Path(chosen) / Path(self.out.text()).name))
        else:
            chosen, _ = QFileDialog.getSaveFileName(self, "Save the merged model as",
                                                    self.out.text(), "Models (*.safetensors)")
            if chosen:
                self.out.setText(chosen)
                self._fix_suffix()

    def command_args(self) -> dict:
        """The merge command's arguments."""
        return dict(adapters=[[str(p), w] for p, w, _ in self.adapters],
                    out=str(Path(self.out.text()).expanduser()), format=self.format(),
                    precision=self.precision.currentData())
