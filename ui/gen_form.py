"""The Generate tab's prompt and settings: prompt, negative prompt, seed (locked or random, with a
dice button), steps, CFG, size, sampler and count."""

from __future__ import annotations

import random

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QLabel, QPlainTextEdit, QSpinBox, QToolButton, QVBoxLayout,
                               QWidget)

from studio import infotext
from studio.protocol import SAMPLERS, GenerateRequest, limits

SEED_MAX = 2**31 - 1  # QSpinBox holds a C int; the worker takes seeds up to 2**32 - 1
COUNT_MAX = 16  # a screenful; the worker would take more

DICE = "⚄"  # U+2684, in DejaVu Sans


def _range(name: str) -> tuple:
    """The worker's limits for a GenerateRequest field (the one rule both sides use)."""
    meta = limits(GenerateRequest, name)
    return meta["minimum"], meta["maximum"]


class PromptEdit(QPlainTextEdit):
    """A few lines of text; Ctrl+Return is left to the Generate button's shortcut."""

    submitted = Signal()

    def __init__(self, placeholder: str, lines: int, parent=None):
        super().__init__(parent)
        self.setPlaceholderText(placeholder)
        self.setTabChangesFocus(True)
        height = self.fontMetrics().lineSpacing() * lines + 14
        self.setMinimumHeight(height)
        self.setMaximumHeight(height * 2)

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and \
                event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class GenerationForm(QWidget):
    submitted = Signal()  # Ctrl+Return in a prompt

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prompt = PromptEdit("What to draw, e.g. “zxq, a lighthouse on a cliff at dusk”", 3)
        self.prompt.setToolTip("The prompt. Put the LoRA's trigger word in it (the buttons "
                               "beside each LoRA below insert it).")
        self.negative = PromptEdit("What to avoid, e.g. “blurry, lowres, watermark”", 1)
        self.negative.setToolTip("The negative prompt: what the image should not look like.")
        for edit in (self.prompt, self.negative):
            edit.submitted.connect(self.submitted)

        self.seed = QSpinBox()
        self.seed.setRange(0, SEED_MAX)
        self.seed.setToolTip("The seed fixes the starting noise: the same seed and settings give "
                             "the same image. Keep it locked to compare LoRAs or strengths.")
        self.seed.setValue(random.randint(0, SEED_MAX))
        self.dice = QToolButton()
        self.dice.setText(DICE)
        font = self.dice.font()
        font.setPointSizeF(font.pointSizeF() * 1.5)  # the die's pips are tiny at text size
        self.dice.setFont(font)
        self.dice.setToolTip("Roll a new random seed.")
        self.dice.clicked.connect(self.roll)
        self.lock = QCheckBox("Locked")
        self.lock.setToolTip("Locked: every Generate uses this seed. Unlocked: a new random seed "
                             "each time (the one used is shown here, lock it to keep it).")
        seed_row = QHBoxLayout()
        seed_row.setContentsMargins(0, 0, 0, 0)
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.dice)
        seed_row.addWidget(self.lock)

        self.steps = QSpinBox()
        self.steps.setRange(*_range("steps"))
        self.steps.setValue(20)
        self.steps.setToolTip("Denoising steps: 20–30 is usual; fewer is faster and rougher.")
        self.cfg = QDoubleSpinBox()
        self.cfg.setRange(*_range("cfg_scale"))
        self.cfg.setSingleStep(0.5)
        self.cfg.setDecimals(1)
        self.cfg.setValue(7.0)
        self.cfg.setToolTip("CFG scale: how strictly the image follows the prompt (5–8 is "
                            "usual).")
        self.width_box, self.height_box = QSpinBox(), QSpinBox()
        for box, what in ((self.width_box, "Width"), (self.height_box, "Height")):
            box.setRange(*_range(what.lower()))
            box.setSingleStep(64)
            box.setValue(512)
            box.setSuffix(" px")
            box.setToolTip(f"{what} in pixels (a multiple of 8). The LoRA works best near the "
                           f"resolution it was trained at.")
            box.editingFinished.connect(lambda b=box: b.setValue(b.value() // 8 * 8))
        size_row = QHBoxLayout()
        size_row.setContentsMargins(0, 0, 0, 0)
        size_row.addWidget(self.width_box, 1)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_box, 1)
        self.sampler = QComboBox()
        self.sampler.addItems(SAMPLERS)
        self.sampler.setToolTip("The sampler (scheduler). Euler and DPM++ 2M are good defaults; "
                                "“Euler a” gives more varied images.")
        self.count = QSpinBox()
        self.count.setRange(1, COUNT_MAX)
        self.count.setToolTip("How many images (seeds seed, seed+1, …).")

        numbers = QFormLayout()
        numbers.setContentsMargins(0, 0, 0, 0)
        numbers.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        numbers.addRow("Seed:", seed_row)
        row = QHBoxLayout()
        row.addWidget(self.steps, 1)
        row.addWidget(QLabel("CFG:"))
        row.addWidget(self.cfg, 1)
        numbers.addRow("Steps:", row)
        numbers.addRow("Size:", size_row)
        row = QHBoxLayout()
        row.addWidget(self.sampler, 2)
        row.addWidget(QLabel("Count:"))
        row.addWidget(self.count, 1)
        numbers.addRow("Sampler:", row)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Prompt</b>"))
        layout.addWidget(self.prompt)
        layout.addWidget(QLabel("<b>Negative prompt</b>"))
        layout.addWidget(self.negative)
        layout.addLayout(numbers)

    def roll(self) -> int:
        self.seed.setValue(random.randint(0, SEED_MAX))
        return self.seed.value()

    def seed_for_run(self) -> int:
        """The seed to use now: the locked one, or a fresh one (shown in the box)."""
        return self.seed.value() if self.lock.isChecked() else self.roll()

    def set_defaults(self, side: int, steps: int, cfg_scale: float) -> None:
        """A project's defaults: its training resolution, and the steps and CFG its samples use
        (one setting for both, so the Generate tab starts where the Train tab's samples were)."""
        self.width_box.setValue(side)
        self.height_box.setValue(side)
        self.steps.setValue(steps)
        self.cfg.setValue(cfg_scale)

    def request(self, seed: int, **changes) -> GenerateRequest:
        """The generate request this form describes; `changes` add the adapters, output folder
        or another count. Raises protocol.ProtocolError for what the worker would refuse."""
        fields = dict(prompt=self.prompt.toPlainText().strip(),
                      negative_prompt=self.negative.toPlainText().strip(), seed=seed,
                      steps=self.steps.value(), cfg_scale=round(self.cfg.value(), 2),
                      width=self.width_box.value() // 8 * 8,
                      height=self.height_box.value() // 8 * 8,
                      sampler=self.sampler.currentText(), count=self.count.value())
        return GenerateRequest(**{**fields, **changes})

    def insert_trigger(self, word: str) -> bool:
        """Put the trigger word at the start of the prompt; False when it is already there."""
        text = self.prompt.toPlainText()
        if word.lower() in text.lower():
            return False
        self.prompt.setPlainText(f"{word}, {text.lstrip()}" if text.strip() else word)
        return True

    def apply(self, params: infotext.Parameters) -> None:
        """Reuse an image's settings (its seed locked, so the image can be made again)."""
        self.prompt.setPlainText(infotext.strip_lora_tags(params.prompt))
        self.negative.setPlainText(params.negative_prompt)
        self.seed.setValue(min(max(params.seed, 0), SEED_MAX))
        self.lock.setChecked(True)
        self.steps.setValue(params.steps)
        self.cfg.setValue(params.cfg_scale)
        self.width_box.setValue(params.width)
        self.height_box.setValue(params.height)
        if params.sampler in SAMPLERS:
            self.sampler.setCurrentText(params.sampler)
