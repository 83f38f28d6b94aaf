"""What the loop does after each step (studio/step_plan.after_step), as a table, without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from studio.config import TrainConfig
from studio.step_plan import Actions, after_step, lora_every_n_epochs, shown_epoch

SAVE4 = TrainConfig(save_every_n_epochs=0, save_every_n_steps=4, resume_point_every_minutes=10.0,
                    sample_every_n_steps=0, sample_every_n_epochs=0)
EPOCHS2 = TrainConfig(save_every_n_epochs=0, save_every_n_steps=0, resume_point_every_minutes=0.0,
                      sample_every_n_steps=0, sample_every_n_epochs=2)
STEPS3 = TrainConfig(save_every_n_epochs=0, save_every_n_steps=0, resume_point_every_minutes=0.0,
                     sample_every_n_steps=3, sample_every_n_epochs=0)
QUIET = TrainConfig(save_every_n_epochs=0, save_every_n_steps=0, resume_point_every_minutes=0.0,
                    sample_every_n_steps=0, sample_every_n_epochs=0)
AUTO = TrainConfig(save_every_n_steps=0, resume_point_every_minutes=0.0,  # the defaults
                  sample_every_n_steps=0, sample_every_n_epochs=0)
EVERY2 = TrainConfig(save_every_n_epochs=2, save_every_n_steps=0, resume_point_every_minutes=0.0,
                     sample_every_n_steps=0, sample_every_n_epochs=0)

# (case, cfg, step, total, epochs_done, epoch_done, stopping, minutes since the last resume point,
#  keyword inputs, expected actions)
CASES = [
    ("a plain step does nothing", SAVE4, 3, 10, 0, False, False, 1.0, {}, Actions()),
    ("progress when the rate limit allows", SAVE4, 3, 10, 0, False, False, 1.0,
     {"progress_due": True}, Actions(progress=True)),
    ("every 4 steps: a LoRA file and its resume point", SAVE4, 4, 10, 0, False, False, 1.0, {},
     Actions(save_lora=True, resume_point=True)),
    ("no step LoRA file at the last step (the final one is saved)", SAVE4, 8, 8, 1, True, False,
     1.0, {}, Actions(progress=True, validate=True)),
    ("a resume point when the timer ran out", SAVE4, 5, 10, 0, False, False, 10.5, {},
     Actions(resume_point=True)),
    ("not after the last step: the run is complete", SAVE4, 10, 10, 1, True, False, 10.5, {},
     Actions(progress=True, validate=True)),
    ("timer 0: never on a timer", QUIET, 5, 10, 0, False, False, 99.0, {}, Actions()),
    ("stop: progress, validation of the LoRA as saved, a resume point, no samples", EPOCHS2,
     5, 10, 1, False, True, 0.0, {}, Actions(progress=True, validate=True, resume_point=True,
                                              stop=True)),
    ("stop on a save step: no LoRA file (the final one is saved)", SAVE4, 4, 10, 0, False, True,
     0.0, {}, Actions(progress=True, validate=True, resume_point=True, stop=True)),
    ("the end of an epoch: validation", QUIET, 5, 10, 1, True, False, 0.0, {},
     Actions(validate=True)),
    ("no held-out images: no validation", QUIET, 5, 10, 1, True, False, 0.0,
     {"has_validation": False}, Actions()),
    ("samples every 2 epochs: not after epoch 1", EPOCHS2, 5, 20, 1, True, False, 0.0, {},
     Actions(validate=True)),
    ("samples every 2 epochs: after epoch 2", EPOCHS2, 10, 20, 2, True, False, 0.0, {},
     Actions(validate=True, sample=True)),
    ("samples every 2 epochs: and at the last step", EPOCHS2, 20, 20, 3, True, False, 0.0, {},
     Actions(progress=True, validate=True, sample=True)),
    ("samples every 3 steps", STEPS3, 6, 20, 0, False, False, 0.0, {}, Actions(sample=True)),
    ("no sample settings: none at the end either", QUIET, 20, 20, 2, True, False, 0.0, {},
     Actions(progress=True, validate=True)),
    ("save now (GUI): a LoRA file and a resume point", QUIET, 3, 10, 0, False, False, 0.0,
     {"save_now": True}, Actions(save_lora=True, resume_point=True)),
    ("sample now (GUI), even when stopping", QUIET, 3, 10, 0, False, True, 0.0,
     {"sample_now": True}, Actions(progress=True, validate=True, resume_point=True, sample=True,
                                   stop=True)),
    ("auto, 3 epochs: a LoRA file at the end of epoch 1", AUTO, 4, 12, 1, True, False, 0.0,
     {"total_epochs": 3}, Actions(validate=True, save_lora=True, resume_point=True)),
    ("auto, 3 epochs: and of epoch 2", AUTO, 8, 12, 2, True, False, 0.0,
     {"total_epochs": 3}, Actions(validate=True, save_lora=True, resume_point=True)),
    ("auto, 3 epochs: not in the middle of one", AUTO, 5, 12, 1, False, False, 0.0,
     {"total_epochs": 3}, Actions()),
    ("auto, 3 epochs: epoch 3 is the final file", AUTO, 12, 12, 3, True, False, 0.0,
     {"total_epochs": 3}, Actions(progress=True, validate=True)),
    ("auto, 100 epochs: every 5th epoch", AUTO, 40, 1000, 4, True, False, 0.0,
     {"total_epochs": 100}, Actions(validate=True)),
    ("auto, 100 epochs: epoch 5 saves", AUTO, 50, 1000, 5, True, False, 0.0,
     {"total_epochs": 100}, Actions(validate=True, save_lora=True, resume_point=True)),
    ("every 2 epochs: not after epoch 1", EVERY2, 5, 30, 1, True, False, 0.0,
     {"total_epochs": 3}, Actions(validate=True)),
    ("every 2 epochs: after epoch 2", EVERY2, 10, 30, 2, True, False, 0.0,
     {"total_epochs": 3}, Actions(validate=True, save_lora=True, resume_point=True)),
    ("stopping at an epoch's end: no extra file (the final one is saved)", AUTO, 4, 12, 1, True,
     True, 0.0, {"total_epochs": 3}, Actions(progress=True, validate=True, resume_point=True,
                                             stop=True)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_after_step(case):
    _, cfg, step, total, epochs, epoch_done, stopping, minutes, kwargs, expected = case
    assert after_step(step, total, epochs, epoch_done, stopping, cfg, minutes, **kwargs) == expected


def test_auto_saves_every_epoch_up_to_20_epochs():
    auto = TrainConfig()
    assert auto.save_every_n_epochs == -1  # the default
    assert [lora_every_n_epochs(auto, n) for n in (0, 1, 3, 20, 21, 40, 100)] == [
        1, 1, 1, 1, 2, 2, 5]
    assert lora_every_n_epochs(TrainConfig(save_every_n_epochs=0), 3) == 0
    assert lora_every_n_epochs(TrainConfig(save_every_n_epochs=3), 3) == 3


def test_shown_epoch_is_the_one_a_step_belongs_to():
    assert shown_epoch(0, False) == 1  # under way in the first epoch
    assert shown_epoch(1, True) == 1  # the step that finished the first epoch
    assert shown_epoch(1, False) == 2


def test_the_plan_needs_neither_torch_nor_qt():
    probe = "import studio.step_plan, sys; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    assert "studio.step_plan" in loaded
    assert not {m.split(".")[0] for m in loaded} & {"torch", "PySide6", "training", "ui"}
