"""A settings form generated from TrainConfig's field metadata (label, help, range, step, group).

Nothing about a setting is written here: add a field to studio/config/__init__.py and it appears, with its
tooltip and range. Editors return raw values (text the artist typed included); the Train tab
coerces and validates them with studio.config and hands problems back via `show_problems`, so
invalid input is shown at its field instead of being silently clamped or dropped.
"""

from __future__ import annotations

import enum
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QSlider, QSpinBox,
                               QVBoxLayout, QWidget)

from studio import config
from studio.config import FIELDS, Problem, TrainConfig
from ui import theme

# Combo boxes sized by a few characters, not by their longest entry (a long path would
# otherwise widen the whole settings column).
SHRINKABLE = QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon

INT_MAX = 2**31 - 1  # QSpinBox is 32-bit; larger ranges (the seed) use a text field


def describe(name: str) -> str:
    """Tooltip: the help text plus the allowed range or choices."""
    meta = FIELDS[name].metadata
    kind = config.field_type(name)
    extra = ""
    if issubclass(kind, enum.Enum):
        extra = "Choices: " + ", ".join(m.value for m in kind)
    elif meta["minimum"] is not None:
        extra = f"Range: {meta['minimum']:g} to {meta['maximum']:g}"
        # Ranges that depend on another setting come from the one table validate() uses.
        for (field, choice), (lo, hi) in config.RANGE_RULES.items():
            if field == name:
                extra += f" ({choice.value}: {lo:g} to {hi:g})"
    default = getattr(TrainConfig(), name)
    default = default.value if isinstance(default, enum.Enum) else \
        ", ".join(default) if isinstance(default, tuple) else default
    shown = default if default not in ("", ()) else "(empty)"
    extra += ("; " if extra else "") + f"default: {shown}"
    return f"<p>{meta['help']}</p><p><i>{extra}</i></p>"


class FieldEditor(QWidget):
    """One setting: its editor and, below it, the error message (hidden while valid)."""

    changed = Signal()

    def __init__(self, name: str, slider: bool = False, parent=None):
        super().__init__(parent)
        self.name = name
        self.meta = FIELDS[name].metadata
        self.kind = config.field_type(name)
        self.slider: QSlider | None = None
        self.editor = self._make_editor(slider)
        self.editor.setToolTip(describe(name))
        self.error = QLabel()
        self.error.setWordWrap(True)
        theme.set_role(self.error, "error")
        self.error.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        if self.slider is not None:
            row.addWidget(self.slider, 1)
        row.addWidget(self.editor, 0 if self.slider is not None else 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.error)

    def _make_editor(self, slider: bool) -> QWidget:
        lo, hi, step = self.meta["minimum"], self.meta["maximum"], self.meta["step"]
        if self.kind is bool:
            box = QCheckBox()
            box.toggled.connect(self.changed)
            return box
        if issubclass(self.kind, enum.Enum):
            combo = QComboBox()
            combo.setSizeAdjustPolicy(SHRINKABLE)
            for member in self.kind:
                combo.addItem(member.value, member.value)
            combo.currentIndexChanged.connect(self.changed)
            return combo
        if self.kind is int and hi is not None and hi <= INT_MAX:
            spin = QSpinBox()
            spin.setRange(int(lo), int(hi))
            spin.setSingleStep(int(step or 1))
            spin.setKeyboardTracking(True)
            spin.valueChanged.connect(self.changed)
            if slider:
                self.slider = QSlider(Qt.Orientation.Horizontal)
                self.slider.setRange(int(lo), min(int(hi), 128))
                self.slider.setToolTip(describe(self.name))
                self.slider.valueChanged.connect(spin.setValue)
                spin.valueChanged.connect(lambda v: self._sync_slider(v))
            return spin
        if self.kind is float and not self.meta["log_scale"] and hi is not None:
            spin = QDoubleSpinBox()
            spin.setDecimals(3 if (step or 1) < 0.1 else 2)
            spin.setRange(lo, hi)
            spin.setSingleStep(step or 0.1)
            spin.valueChanged.connect(self.changed)
            return spin
        if self.kind is tuple:
            # One entry per line: entries (sample prompts) may contain commas themselves.
            lines = QPlainTextEdit()
            lines.setPlaceholderText("one per line")
            lines.setTabChangesFocus(True)
            lines.setFixedHeight(lines.fontMetrics().lineSpacing() * 4 + 12)
            lines.textChanged.connect(self.changed)
            return lines
        line = QLineEdit()  # text, log-scale floats (1e-4) and very large ints
        line.textChanged.connect(self.changed)
        return line

    def _sync_slider(self, value: int) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(value)
        self.slider.blockSignals(False)

    def set_value(self, value: Any) -> None:
        e = self.editor
        e.blockSignals(True)
        if isinstance(e, QCheckBox):
            e.setChecked(bool(value))
        elif isinstance(e, QComboBox):
            e.setCurrentIndex(max(0, e.findData(getattr(value, "value", value))))
        elif isinstance(e, (QSpinBox, QDoubleSpinBox)):
            # A hand-edited project.toml may hold an out-of-range value: widen the range so it
            # is shown as it is (and flagged by validate) instead of silently clamped.
            if value < e.minimum():
                e.setMinimum(value)
            if value > e.maximum():
                e.setMaximum(value)
            e.setValue(value)
            if self.slider is not None:
                self._sync_slider(int(value))
        elif isinstance(e, QPlainTextEdit):
            e.setPlainText("\n".join(value))
        elif isinstance(value, float):
            e.setText(f"{value:g}")
        else:
            e.setText(str(value))
        e.blockSignals(False)

    def value(self) -> Any:
        """The raw value: typed for spin boxes, checks and choices; text for line edits."""
        e = self.editor
        if isinstance(e, QCheckBox):
            return e.isChecked()
        if isinstance(e, QComboBox):
            return e.currentData()
        if isinstance(e, (QSpinBox, QDoubleSpinBox)):
            return e.value()
        if isinstance(e, QPlainTextEdit):
            return [line.strip() for line in e.toPlainText().splitlines() if line.strip()]
        return e.text().strip() if self.kind is not str else e.text()

    def set_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))
        theme.set_invalid(self.editor, bool(message))
        self._fit_error()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_error()

    def _fit_error(self) -> None:
        # Form rows inside a scroll area don't get their height-for-width, so a wrapped message
        # would be clipped: reserve the lines it needs at the current width explicitly.
        if self.error.text():
            self.error.setMinimumHeight(self.error.heightForWidth(max(self.width(), 120)))


class ConfigForm(QWidget):
    """Editors for `names`; with `grouped`, one titled box per metadata group."""

    changed = Signal()

    def __init__(self, names: list[str], grouped: bool = False, sliders: tuple[str, ...] = (),
                 parent=None):
        super().__init__(parent)
        self.editors: dict[str, FieldEditor] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        forms: dict[str, QFormLayout] = {}
        for name in names:
            group = FIELDS[name].metadata["group"] if grouped else ""
            if group not in forms:
                forms[group] = QFormLayout()
                forms[group].setFieldGrowthPolicy(
                    QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                # Long labels ("Checkpoint every N steps") go above their field when the column
                # is narrow, instead of pushing the editors out of view.
                forms[group].setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
                if grouped:
                    box = QGroupBox(group)
                    box.setLayout(forms[group])
                    layout.addWidget(box)
                else:
                    layout.addLayout(forms[group])
            editor = FieldEditor(name, slider=name in sliders)
            editor.changed.connect(self.changed)
            label = QLabel(FIELDS[name].metadata["label"] + ":")
            label.setToolTip(describe(name))
            label.setBuddy(editor.editor)
            forms[group].addRow(label, editor)
            self.editors[name] = editor

    def set_config(self, cfg: TrainConfig) -> None:
        for name, editor in self.editors.items():
            editor.set_value(getattr(cfg, name))

    def raw_values(self) -> dict[str, Any]:
        return {name: editor.value() for name, editor in self.editors.items()}

    def show_problems(self, problems: list[Problem]) -> None:
        messages: dict[str, list[str]] = {}
        for p in problems:
            messages.setdefault(p.field, []).append(p.message)
        for name, editor in self.editors.items():
            label = FIELDS[name].metadata["label"]
            editor.set_error("; ".join(f"{label} {m}" for m in messages.get(name, [])))


def apply_raw(base: TrainConfig, raw: dict[str, Any]) -> tuple[TrainConfig, list[Problem]]:
    """`base` with every raw value that converts; problems for those that don't, plus every
    validation problem of the result. Unconvertible fields keep their `base` value."""
    good, problems = {}, []
    for name, value in raw.items():
        try:
            good[name] = config.coerce(name, value)
        except ValueError as exc:
            problems.append(Problem(name, str(exc)))
    cfg = config.from_dict(good, base)
    bad = {p.field for p in problems}
    problems += [p for p in config.validate(cfg) if p.field not in bad]
    return cfg, problems
