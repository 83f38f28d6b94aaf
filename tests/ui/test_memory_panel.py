"""The Train tab's GPU memory figure (issue 15 item 1a/b, issue 17 item 9) with the fake planner
(tests/fake_planner.py): the prediction for the artist's card, the red line when it will not fit,
Fit to my GPU and Revert, cached plans without a worker, and the card remembered."""

from __future__ import annotations

import pytest

from studio import config
from studio.machine import memory_fit
from ui import device
from ui.app_settings import SettingsStore
from ui.main_window import MainWindow
from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import open_and_wait


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """A machine without an NVIDIA GPU: the artist picks the card (6-24 GB)."""
    monkeypatch.setattr(device, "gpus", lambda: ())


def choose_card(panel, gb: int) -> None:
    index = next(i for i in range(panel.card.count())
                 if panel.card.itemData(i).memory_bytes == gb * device.GIB)
    panel.card.setCurrentIndex(index)


def predicted(qtbot, panel, timeout=20000):
    qtbot.waitUntil(lambda: panel.planner.plan is not None and panel.planner.state == "idle",
                    timeout=timeout)
    return panel.planner.plan


@pytest.fixture
def ready(qtbot, window, clean_art, sd15):
    open_and_wait(qtbot, window, clean_art, sd15)
    return window


def test_the_figure_appears_and_is_marked_over_budget_for_a_small_card(qtbot, ready,
                                                                       fake_worker):
    panel = ready.train_tab.settings.memory
    fake_worker.plan_delay = 1.5
    ready.session.update(rank=8)  # new settings: predicted in the background, after a pause
    assert "predicting… (about 6 s)" in panel.figure.text()  # SD1.5, before any was timed
    qtbot.waitUntil(lambda: panel.planner.state == "predicting", timeout=5000)
    assert "predicting…" in panel.figure.text() and not panel.fit_button.isEnabled()
    choose_card(panel, 6)
    plan = predicted(qtbot, panel)
    assert plan.settings.rank == 8 and not plan.settings.gradient_checkpointing
    need = memory_fit.needed_bytes(plan)
    assert "Predicted peak" in panel.figure.text() and f"{need / 2**30:,.1f} GB" in \
        panel.figure.text()
    assert panel.verdict.property("role") == "error" and not panel.verdict.isHidden()
    assert "Will not fit a 6 GB card" in panel.verdict.text()
    assert f"need ≈ {need / 2**30:,.1f} GB" in panel.verdict.text()
    runs = panel.planner.started_runs
    choose_card(panel, 12)  # the same plan, another card: no new prediction
    assert panel.verdict.property("role") == "muted" and "Fits a 12 GB card" in \
        panel.verdict.text()
    assert panel.planner.started_runs == runs
    assert "Predicted peak" in panel.figure.text()  # the rough guess is gone
    assert "rough guess" not in ready.train_tab.settings.estimate.text()
    assert SettingsStore().data.planner_gpu == "12"  # remembered for the next start


def test_fit_to_my_gpu_applies_the_changes_and_reverts(qtbot, ready):
    panel, session = ready.train_tab.settings.memory, ready.session
    choose_card(panel, 6)
    predicted(qtbot, panel)
    assert not session.config.gradient_checkpointing and panel.verdict.property("role") == \
        "error"
    panel.fit_button.click()
    assert panel.planner.state == "fitting" and "Fitting to a 6 GB card" in \
        panel.fit_result.text()
    qtbot.waitUntil(lambda: "Fit to a 6 GB card" in panel.fit_result.text(), timeout=20000)
    assert session.config.gradient_checkpointing  # checkpointing first, the batch kept
    assert session.config.batch_size == 1 and not panel.revert_button.isHidden()
    assert "Gradient checkpointing off → on" in panel.fit_result.text()
    plan = predicted(qtbot, panel)  # the fit's plan, cached by the planner: shown at once
    assert plan.settings.gradient_checkpointing and "Fits a 6 GB card" in panel.verdict.text()
    assert ready.train_tab.settings.editor("gradient_checkpointing") is not None
    panel.revert_button.click()
    assert not session.config.gradient_checkpointing and panel.revert_button.isHidden()
    assert "Will not fit" in panel.verdict.text()  # the earlier plan, from the cache


def test_a_fit_that_needs_a_quantized_base_applies_it(qtbot, ready, fake_worker):
    fake_worker.plan_weights_gib = 20  # only a quantized base fits a 16 GB card
    panel, session = ready.train_tab.settings.memory, ready.session
    choose_card(panel, 16)
    session.update(rank=12)
    predicted(qtbot, panel)
    panel.fit_button.click()
    qtbot.waitUntil(lambda: panel.planner.state == "idle", timeout=20000)
    assert "fp8" in panel.fit_result.text()
    assert session.config.base_quantization == "fp8" and not panel.revert_button.isHidden()
    panel.revert_button.click()
    assert session.config.base_quantization == "none"


def test_when_nothing_fits_the_panel_says_which_phase_and_what_to_do(qtbot, ready,
                                                                     fake_worker):
    """Samples alone too big for every setting: the panel names them and the setting to turn
    off, in the words `plan-memory` prints (memory_fit.nothing_fits), and changes nothing."""
    fake_worker.plan_sampling_gib = 7  # 8.3 GiB with slack and context: over a 6 GB card
    panel, session = ready.train_tab.settings.memory, ready.session
    choose_card(panel, 6)
    session.update(rank=12, sample_every_n_epochs=1)
    predicted(qtbot, panel)
    before = session.config
    panel.fit_button.click()
    qtbot.waitUntil(lambda: panel.planner.state == "idle" and not panel.fit_result.isHidden(),
                    timeout=20000)
    text = panel.fit_result.text()
    assert "Nothing LoRA Studio can change fits a 6 GB card" in text
    assert "sample images shown during training" in text and "Turn samples off" in text
    assert session.config == before and panel.revert_button.isHidden()


def test_cached_plans_show_without_running_the_worker(qtbot, ready, fake_worker, clean_art):
    panel = ready.train_tab.settings.memory
    first = predicted(qtbot, panel)
    assert list((ready.session.project.cache / "memory").glob("*.json"))
    ready.session.save_now()
    again = MainWindow(SettingsStore(), fake_worker)  # the app started again
    qtbot.addWidget(again)
    again.show()
    open_and_wait(qtbot, again, clean_art)
    other = again.train_tab.settings.memory
    qtbot.waitUntil(lambda: other.planner.plan is not None, timeout=5000)
    assert other.planner.plan == first and "Predicted peak" in other.figure.text()
    qtbot.wait(1200)  # past the debounce: still no worker
    assert other.planner.started_runs == 0 and other.planner.state == "idle"


def test_typing_restarts_one_prediction_and_a_run_pauses_it(qtbot, ready, fake_worker):
    panel, session = ready.train_tab.settings.memory, ready.session
    predicted(qtbot, panel)
    runs = panel.planner.started_runs
    fake_worker.plan_delay = 1.0
    for rank in (5, 6, 7):  # a slider drag: one prediction, for the last value
        session.update(rank=rank)
        qtbot.wait(100)
    session.update(learning_rate=2e-4)  # nothing the planner counts: no restart
    assert predicted(qtbot, panel).settings.rank == 7
    assert panel.planner.started_runs == runs + 1
    ready.train_tab.running_changed.emit(True)  # a run: nothing new is predicted meanwhile
    session.update(rank=9)
    qtbot.wait(1200)
    assert panel.planner.started_runs == runs + 1 and "once this run ends" in \
        panel.figure.text()
    ready.train_tab.running_changed.emit(False)
    assert predicted(qtbot, panel).settings.rank == 9


def test_closing_the_window_ends_a_prediction(qtbot, ready, fake_worker):
    panel = ready.train_tab.settings.memory
    fake_worker.plan_delay = 30
    ready.session.update(rank=10)
    qtbot.waitUntil(lambda: panel.planner.state == "predicting", timeout=5000)
    worker = panel.planner.worker
    ready.close()
    assert worker.wait(5000) and panel.planner.worker is None
