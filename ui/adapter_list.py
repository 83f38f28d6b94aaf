"""The LoRAs to generate with: one row per training run of the project (its final file or a
per-epoch LoRA file) and per file added from disk, each with an enable box, a strength slider (−1 … 2)
with a number box, and a button that puts its trigger word into the prompt."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFrame,
                               QHBoxLayout, QLabel, QPushButton, QScrollArea,
                               QSlider, QToolButton, QVBoxLayout, QWidget)

from studio.runs import loras as lora_catalog
from studio.runs.loras import STRENGTH_MAX, STRENGTH_MIN, STRENGTH_STEP, LoraFile, RunLoras
from studio.safetensors_header import read_header
from ui import theme
from ui.widgets.elided_label import ElidedLabel


# The slider snaps to 0 (the base model) and 1 (the LoRA as trained) within this distance: a
# drag meant for "off" used to land on -0.05 (issue 14). Typed values are never snapped.
SNAP = 0.1


def _ticks(value: float) -> int:
    return round(value / STRENGTH_STEP)


def snapped(value: float) -> float:
    """A slider position as a strength: near 0 or 1 it is exactly 0 or 1."""
    for mark in (0.0, 1.0):
        if abs(value - mark) <= SNAP + 1e-9:
            return mark
    return value


class AdapterRow(QFrame):
    """One LoRA: [✓] name  [+ trigger]  [✕] / [version ▾]  slider  [1.00]."""

    changed = Signal()
    trigger_requested = Signal(str)
    remove_requested = Signal(object)  # the row

    def __init__(self, key: str, title: str, files: list[LoraFile], removable: bool,
                 parent=None):
        super().__init__(parent)
        theme.set_role(self, "card")
        self.key = key  # the run folder or the file: what survives a refresh
        self.removable = removable  # a file added by hand (not one of the project's runs)
        self.enabled = QCheckBox()
        self.enabled.setToolTip("Use this LoRA when generating.")
        self.enabled.toggled.connect(self._on_enabled)
        self.name = ElidedLabel(title, bold=True)
        self.outcome = QLabel()  # "stopped at step 81 of 600": not the LoRA as planned
        theme.set_role(self.outcome, "muted")
        self.outcome.hide()
        self.version = QComboBox()
        self.version.setToolTip("The final LoRA of this run or one of its per-epoch LoRA files (earlier "
                                "stages of training).")
        self.version.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.version.currentIndexChanged.connect(self._on_version)
        self.trigger = QPushButton()
        self.trigger.clicked.connect(lambda: self.trigger_requested.emit(self.trigger_word))
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setToolTip("Remove this file from the list (the file stays on disk).")
        self.remove.clicked.connect(lambda: self.remove_requested.emit(self))
        self.remove.setVisible(removable)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(_ticks(STRENGTH_MIN), _ticks(STRENGTH_MAX))
        self.slider.setPageStep(_ticks(0.25))
        # Marks at −1, 0, 1 and 2 (the range starts at a mark): 0 and 1 are where to look.
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setTickInterval(_ticks(1.0))
        self.slider.setToolTip("Strength: 1 is the LoRA as trained, 0 the base model, above 1 "
                               "exaggerates it, below 0 pushes away from it.")
        self.strength = QDoubleSpinBox()
        self.strength.setRange(STRENGTH_MIN, STRENGTH_MAX)
        self.strength.setSingleStep(STRENGTH_STEP)
        self.strength.setDecimals(2)
        self.strength.setToolTip(self.slider.toolTip())
        # Typed values are committed on Enter or when the box loses focus, never per keystroke:
        # committing "0" of "0.7" re-wrote the box as "0.00" and the rest of the typing was lost
        # (issue 14). The arrows and the wheel still commit at once.
        self.strength.setKeyboardTracking(False)
        self.slider.valueChanged.connect(lambda v: self.set_strength(snapped(v * STRENGTH_STEP)))
        self.strength.valueChanged.connect(self.set_strength)
        self.trigger_word = ""
        self.status = ""

        column = QVBoxLayout(self)
        column.setContentsMargins(8, 4, 8, 4)
        column.setSpacing(2)
        top = QHBoxLayout()
        top.setSpacing(6)
        top.addWidget(self.enabled)
        top.addWidget(self.name, 1)
        top.addWidget(self.outcome)
        top.addWidget(self.trigger)
        top.addWidget(self.remove)
        bottom = QHBoxLayout()
        bottom.setSpacing(6)
        bottom.addWidget(self.version)
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.strength)
        column.addLayout(top)
        column.addLayout(bottom)
        self.set_files(files)
        self.set_strength(1.0)
        self._on_enabled(False)

    def set_files(self, files: list[LoraFile]) -> None:
        current = self.path()
        self.version.blockSignals(True)
        self.version.clear()
        for entry in files:
            self.version.addItem(entry.label, str(entry.path))
        index = self.version.findData(str(current)) if current else -1
        self.version.setCurrentIndex(max(index, 0))
        self.version.blockSignals(False)
        self.version.setVisible(len(files) > 1)
        self._on_version()

    def set_outcome(self, status: str, outcome: str) -> None:
        """Mark a run that did not finish (stopped, failed, not finished); finished: no mark."""
        self.status = status
        shown = bool(status) and status != "finished"
        self.outcome.setText(outcome if shown else "")
        self.outcome.setVisible(shown)
        self.outcome.setToolTip("This run did not train to the end: its LoRA file holds the "
                                "state when it stopped." if shown else "")

    def select(self, path: Path) -> bool:
        index = self.version.findData(str(path))
        if index >= 0:
            self.version.setCurrentIndex(index)
        return index >= 0

    def path(self) -> Path | None:
        data = self.version.currentData() if self.version.count() else None
        return Path(data) if data else None

    def set_strength(self, value: float) -> None:
        value = round(min(max(float(value), STRENGTH_MIN), STRENGTH_MAX), 2)
        for widget, v in ((self.slider, _ticks(value)), (self.strength, value)):
            widget.blockSignals(True)
            widget.setValue(v)
            widget.blockSignals(False)
        self.changed.emit()

    def value(self) -> float:
        return round(self.strength.value(), 2)

    def is_enabled(self) -> bool:
        return self.enabled.isChecked()

    def _on_enabled(self, on: bool) -> None:
        for widget in (self.slider, self.strength):
            widget.setEnabled(on)
        self.changed.emit()

    def _on_version(self, *_) -> None:
        path = self.path()
        self.trigger_word = lora_catalog.trigger_word(path) if path else ""
        self.trigger.setText(f"+ {self.trigger_word}" if self.trigger_word else "no trigger")
        self.trigger.setEnabled(bool(self.trigger_word))
        self.trigger.setToolTip(f"Insert “{self.trigger_word}”, the word this LoRA was trained "
                                f"with, into the prompt." if self.trigger_word else
                                "This file names no trigger word in its metadata.")
        self.version.setToolTip(str(path) if path else "")
        self.changed.emit()


class AdapterList(QWidget):
    changed = Signal()
    trigger_requested = Signal(str)
    status_message = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[AdapterRow] = []
        self.runs: list[RunLoras] = []
        self.empty = QLabel("No LoRA yet: train one on the Train tab, or add a .safetensors "
                            "LoRA file.")
        self.empty.setWordWrap(True)
        theme.set_role(self.empty, "muted")
        self.add_button = QPushButton("Add file…")
        self.add_button.setToolTip("Use any LoRA file (.safetensors), e.g. one from Civitai or "
                                   "another trainer.")
        self.add_button.clicked.connect(self.choose_file)
        inner = QWidget()
        self.column = QVBoxLayout(inner)
        self.column.setContentsMargins(0, 0, 0, 0)
        self.column.setSpacing(4)
        self.column.addWidget(self.empty)
        self.column.addStretch()
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll = scroll
        head = QHBoxLayout()
        head.addWidget(QLabel("<b>LoRAs</b>"))
        head.addStretch()
        head.addWidget(self.add_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(scroll, 1)

    # --- rows ------------------------------------------------------------------------------
    def _add_row(self, key: str, title: str, files: list[LoraFile], removable: bool
                 ) -> AdapterRow:
        row = AdapterRow(key, title, files, removable)
        row.changed.connect(self.changed)
        row.trigger_requested.connect(self.trigger_requested)
        row.remove_requested.connect(self._remove)
        self.column.insertWidget(self.column.count() - 1, row)
        self.rows.append(row)
        self.empty.hide()
        return row

    def _remove(self, row: AdapterRow) -> None:
        self.rows.remove(row)
        self.column.removeWidget(row)
        row.hide()
        row.deleteLater()
        self.empty.setVisible(not self.rows)
        self.changed.emit()

    def row_for(self, key: str) -> AdapterRow | None:
        return next((r for r in self.rows if r.key == key), None)

    def set_runs(self, runs: list[RunLoras], enable_newest: bool = False) -> None:
        """The project's runs (newest first), keeping each existing row's choices. The newest
        finished run (lora_catalog.default_run) starts enabled when asked, or when the list was
        empty (the first LoRA)."""
        enable_newest = enable_newest or not self.rows
        self.runs = runs
        first = lora_catalog.default_run(runs)
        keys = {str(r.run) for r in runs}
        for row in [r for r in self.rows if not r.removable and r.key not in keys]:
            self._remove(row)
        run_rows = []
        for run in runs:
            row = self.row_for(str(run.run))
            if row is None:
                row = self._add_row(str(run.run), run.title, list(run.files), False)
                if enable_newest and run is first:
                    row.enabled.setChecked(True)
            else:
                row.name.set_full_text(run.title)  # may have become ambiguous: see the catalog
                row.set_files(list(run.files))
            row.set_outcome(run.status, run.outcome)
            run_rows.append(row)
        # Newest run first, then the files added by hand (also the order of `adapters()`).
        self.rows = run_rows + [r for r in self.rows if r.removable]
        for row in self.rows:
            self.column.removeWidget(row)
            self.column.insertWidget(self.column.count() - 1, row)
        self.empty.setVisible(not self.rows)

    def clear(self) -> None:
        for row in list(self.rows):
            self._remove(row)
        self.runs = []

    def add_file(self, path: Path, enable: bool = True) -> AdapterRow | None:
        path = Path(path)
        if path.suffix.lower() != ".safetensors":
            self.status_message.emit(f"{path.name}: only .safetensors LoRA files can be used.")
            return None
        try:
            read_header(path)
        except (OSError, ValueError) as exc:
            self.status_message.emit(f"Not a usable LoRA file: {exc}")
            return None
        row = self.row_for(str(path)) or self._add_row(
            str(path), path.stem, [LoraFile(path, path.name)], True)
        row.enabled.setChecked(enable or row.is_enabled())
        return row

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a LoRA file", "",
                                              "LoRA files (*.safetensors)")
        if path:
            self.add_file(Path(path))

    def select(self, path: Path, only: bool = True) -> AdapterRow | None:
        """Enable the row holding this file (choosing it in its version list), the others off."""
        found = lora_catalog.find(self.runs, path)
        row = self.row_for(str(found[0].run)) if found else self.row_for(str(path))
        if row is None:
            row = self.add_file(path)
        if row is None:
            return None
        row.select(Path(path))
        if only:
            for other in self.rows:
                other.enabled.setChecked(other is row)
        row.enabled.setChecked(True)
        return row

    # --- what generation uses --------------------------------------------------------------
    def active(self) -> list[tuple[Path, float, str]]:
        """(file, strength, name) of each enabled LoRA, in list order."""
        return [(row.path(), row.value(), row.path().stem) for row in self.rows
                if row.is_enabled() and row.path() is not None]

    def adapters(self) -> list[tuple[str, float]]:
        """GenerateRequest.adapters: [(path, strength), …] of the enabled LoRAs."""
        return [(str(path), strength) for path, strength, _ in self.active()]
