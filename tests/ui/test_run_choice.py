"""The Generate tab's choice of LoRA after real (fake-worker) runs: a LoRA file per epoch makes the
grid's rows epochs, and the LoRA list marks stopped and failed runs and starts with the newest
finished one (issue 14)."""

from __future__ import annotations

from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import make_run, open_and_wait


def test_a_three_epoch_run_gives_a_grid_of_three_epochs(qtbot, window, clean_art, sd15,
                                                         fake_worker):
    fake_worker.steps, fake_worker.delay = 12, 0.005  # the fake's epochs: 4 steps each
    project = open_and_wait(qtbot, window, clean_art, sd15)
    tab = window.train_tab
    with qtbot.waitSignal(tab.run_finished, timeout=30000):
        tab.train_button.click()
    run = next((project.root / "runs").iterdir())
    assert sorted(p.name for p in (run / "loras").iterdir()) == [
        "fake-style-step000004.safetensors", "fake-style-step000008.safetensors"]
    window.tabs.setCurrentWidget(window.generate_tab)
    grid = window.generate_tab.grid
    rows = grid.selected().checkpoints_oldest_first()
    assert [f.label for f in rows] == ["epoch 1 · step 4", "epoch 2 · step 8", "final (step 12)"]
    assert grid.summary.text().startswith("3 checkpoints")


def test_stopped_and_failed_runs_are_marked_and_the_newest_finished_is_ticked(
        qtbot, window, clean_art, sd15):
    project = open_and_wait(qtbot, window, clean_art, sd15)
    root = project.root
    make_run(root, "20260101-100000", output="older", status="finished")
    make_run(root, "20260102-100000", output="good", status="finished")
    make_run(root, "20260103-100000", output="cut-short", status="stopped", final_step=81,
             total=600)
    make_run(root, "20260104-100000", output="broken", status="failed", final_step=40)
    window.tabs.setCurrentWidget(window.generate_tab)
    rows = window.generate_tab.adapters.rows
    assert [r.name.full_text().split(" · ")[0] for r in rows] == [
        "broken", "cut-short", "good", "older"]
    assert [r.outcome.text() for r in rows] == ["failed", "stopped at step 81 of 600", "", ""]
    assert [not r.outcome.isHidden() for r in rows] == [True, True, False, False]
    assert [r.is_enabled() for r in rows] == [False, False, True, False]
    grid = window.generate_tab.grid
    assert grid.selected().name == "good"
    assert "stopped at step 81 of 600" in grid.run.itemText(1)
