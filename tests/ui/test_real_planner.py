"""The Train tab's GPU memory figure from the real planner (`python -m training plan-memory`) on
the tiny model: predicted in the background, cached, and the same figure `check` reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from studio.machine import memory_fit
from training.demo import draw_shapes
from ui import device
from ui.app_settings import SettingsStore
from ui.main_window import MainWindow
from uihelpers import ROOT, open_and_wait
from uifixtures import *  # noqa: F403 (pytest fixtures)

pytestmark = pytest.mark.slow


def test_the_real_planner_predicts_fits_and_agrees_with_check(qtbot, tiny_model, tmp_path,
                                                              monkeypatch):
    monkeypatch.setattr(device, "gpus", lambda: ())
    images = draw_shapes(tmp_path / "shapes", 6, seed=1)
    window = MainWindow(SettingsStore())  # the default worker command: the real engine
    qtbot.addWidget(window)
    window.show()
    open_and_wait(qtbot, window, images, tiny_model)
    window.session.update(resolution=64, rank=4, batch_size=2, sample_every_n_epochs=0)
    panel = window.train_tab.settings.memory
    qtbot.waitUntil(lambda: panel.planner.state == "predicting", timeout=10000)
    assert "predicting… (about" in panel.figure.text()
    qtbot.waitUntil(lambda: panel.planner.plan is not None and panel.planner.state == "idle",
                    timeout=240000)
    plan = panel.planner.plan
    assert not panel.planner.error
    assert plan.settings.batch_size == 2 and plan.settings.rank == 4
    assert plan.settings.width * plan.settings.height <= 64 * 64
    assert 0 < plan.peak_bytes < 2**30 and "Predicted peak" in panel.figure.text()
    assert "Fits an 8 GB card" in panel.verdict.text()  # the default card without a GPU
    # Fit to my GPU: the tiny model already fits.
    panel.fit_button.click()
    qtbot.waitUntil(lambda: panel.planner.state == "idle", timeout=240000)
    assert "already fit" in panel.fit_result.text()
    # The same figure in `check`, read from the plan the window's worker cached.
    window.session.save_now()
    proc = subprocess.run([sys.executable, "-m", "training", "check",
                           str(window.session.project.root), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    report = json.loads(proc.stdout)
    assert report["gpu_memory"]["predicted"] is True
    assert report["gpu_memory_bytes"] == memory_fit.needed_bytes(plan)
