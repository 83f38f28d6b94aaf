"""Strength boxes keep what the artist types (committed on Enter or focus-out, never re-clamped
mid-typing), and the slider snaps to its 0 and 1 marks (issue 14)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit

from studio.runs.loras import LoraFile
from ui.adapter_list import AdapterList
from uihelpers import write_lora


@pytest.fixture
def row(qtbot, tmp_path):
    adapters = AdapterList()
    qtbot.addWidget(adapters)
    lora = write_lora(tmp_path / "style.safetensors", {"modelspec.trigger_phrase": "zxqstyle"})
    row = adapters.add_file(lora)
    adapters.show()
    qtbot.waitExposed(adapters)
    row.list = adapters  # keeps the list alive as long as the row is used
    return row


def type_into(qtbot, row, text: str, start: float | None, commit=Qt.Key.Key_Return) -> None:
    if start is not None:
        row.set_strength(start)
    edit = row.strength.findChild(QLineEdit)
    row.strength.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, text)
    if commit is not None:
        qtbot.keyClick(edit, commit)


@pytest.mark.parametrize("start,text,value", [(1.0, "0.7", 0.7), (0.5, "1.2", 1.2),
                                              (1.0, "-0.5", -0.5), (0.25, "2", 2.0),
                                              (1.0, "0", 0.0)])
def test_a_typed_strength_is_exactly_what_was_typed(qtbot, row, start, text, value):
    adapters = row.list
    type_into(qtbot, row, text, start)
    assert row.value() == value
    assert row.slider.value() == round(value / 0.05)
    assert adapters.adapters()[0][1] == value  # what GenerateRequest gets


def test_typing_is_not_committed_per_keystroke(qtbot, row):
    seen = []
    row.set_strength(0.5)
    row.changed.connect(lambda: seen.append(row.value()))
    type_into(qtbot, row, "1.2", None, commit=None)
    assert seen == [] and row.strength.text() == "1.2"  # still as typed, nothing committed
    qtbot.keyClick(row.strength.findChild(QLineEdit), Qt.Key.Key_Enter)
    assert seen[-1] == 1.2


def test_focus_out_commits_the_typed_value(qtbot, row):
    other = QLineEdit()
    row.list.layout().addWidget(other)
    other.show()
    type_into(qtbot, row, "0.7", 1.0, commit=None)
    other.setFocus()
    qtbot.waitUntil(lambda: row.value() == 0.7, timeout=2000)


def test_the_slider_snaps_to_zero_and_one_and_shows_marks(qtbot, row):
    from PySide6.QtWidgets import QSlider

    assert row.slider.tickPosition() != QSlider.TickPosition.NoTicks
    assert row.slider.minimum() == -20 and row.slider.tickInterval() == 20  # marks −1, 0, 1, 2
    for ticks, value in ((-1, 0.0), (1, 0.0), (2, 0.0), (18, 1.0), (21, 1.0), (7, 0.35),
                         (-7, -0.35), (40, 2.0)):
        row.slider.setValue(ticks)
        assert row.value() == value, ticks
        assert row.slider.value() == round(value / 0.05)
