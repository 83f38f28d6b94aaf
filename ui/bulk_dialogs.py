"""Dialogs for bulk caption edits; they only collect input and preview the effect (the Dataset
tab applies the edit, so it lands on the undo stack)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QLabel,
                               QLineEdit, QVBoxLayout)

from studio.dataset import captions
from ui import theme


class FindReplaceDialog(QDialog):
    def __init__(self, images: list[Path], scope: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Find and replace in captions")
        self.images = images
        self.find = QLineEdit()
        self.find.setToolTip("Text to look for (plain text, not a pattern).")
        self.replace = QLineEdit()
        self.replace.setPlaceholderText("(leave empty to remove)")
        self.replace.setToolTip("What to put instead. Empty removes the text, and the commas "
                                "around a removed tag are tidied up.")
        self.whole = QCheckBox("Whole words only")
        self.whole.setToolTip("Match 'cat' but not 'category'.")
        self.case = QCheckBox("Match case")
        self.case.setToolTip("Treat upper and lower case as different.")
        self.preview = QLabel()
        theme.set_role(self.preview, "muted")
        form = QFormLayout()
        form.addRow("Find:", self.find)
        form.addRow("Replace with:", self.replace)
        form.addRow("", self.whole)
        form.addRow("", self.case)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok |
                                        QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Replace")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"In the captions of {scope}. Edit ▸ Undo reverts it."))
        layout.addLayout(form)
        layout.addWidget(self.preview)
        layout.addWidget(self.buttons)
        for widget in (self.find, self.replace):
            widget.textChanged.connect(self._update)
        for box in (self.whole, self.case):
            box.toggled.connect(self._update)
        self.case.setChecked(True)
        self._update()

    def edit(self) -> Callable[[str], str]:
        return captions.replacer(self.find.text(), self.replace.text(), self.whole.isChecked(),
                                 self.case.isChecked())

    def _update(self) -> None:
        n = captions.preview(self.images, self.edit()) if self.find.text() else 0
        self.preview.setText(f"{n} caption(s) will change." if self.find.text()
                             else "Type the text to find.")
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(n > 0)
