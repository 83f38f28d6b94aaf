"""The Report card in the app, with the fake worker: made automatically after a finished run (with
progress, cancellable), its table, recommendation, charts and images, "Use this epoch" ticking
that file in the Generate tab, Copy to…, and the runs list's recommended epoch."""

from __future__ import annotations

import json

import pytest

from studio.runs import report_card as rc
from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import open_and_wait


@pytest.fixture
def ready(qtbot, window, clean_art, sd15):
    open_and_wait(qtbot, window, clean_art, sd15)
    assert window.train_tab.train_button.isEnabled(), window.train_tab.reason.text()
    return window


def train(qtbot, window, timeout=30000):
    with qtbot.waitSignal(window.train_tab.run_finished, timeout=timeout) as finished:
        window.train_tab.train_button.click()
    return finished.args


def test_card_after_a_run_use_this_epoch_and_copy(qtbot, ready, fake_worker, tmp_path):
    ready.session.update(save_every_n_steps=5)  # the fake writes a LoRA file per epoch then
    tab = ready.train_tab
    started = []
    tab.evaluation.started.connect(started.append)
    assert train(qtbot, ready) == [0, False]
    run = tab.panel.run_dir
    assert started == [run]  # made automatically (evaluate_after_training is on by default)
    card = rc.load(run)
    assert card is not None and len(card.rows) == 5  # base + 3 epoch files + the final file
    assert tab.train_button.isEnabled() and not tab.evaluation.is_running()

    # The runs list shows the recommended epoch, and opens the card.
    assert tab.runs.tree.topLevelItem(0).text(4) == "2"
    tab.views.setCurrentIndex(0)
    tab.runs.report_button.click()
    view = tab.report
    assert tab.views.currentWidget() is view and view.run_dir == run
    table = view.table
    assert table.rowCount() == 5 and table.item(0, 1).text() == "base model"
    assert [table.item(i, 1).text() for i in range(5)] == [
        "base model", "epoch 1", "epoch 2", "epoch 3", "epoch 4"]
    assert table.item(2, 0).text() == "★" and table.item(2, 3).text() == "100 %"
    assert table.item(4, 3).text() == "44 %" and table.item(2, 2).text() == "0.70"
    assert "epoch 2: style 0.70" in view.recommendation.text()
    assert "epochs 3, 4 lose fidelity" in view.recommendation.text()
    assert [p for _, p in view.charts["Style match"].points] == [0.85, 0.7, 0.55, 0.4]
    assert view.charts["Style match"].marked == 1
    assert view.charts["Validation loss"].points  # measured in training, per epoch
    # The recommended file is chosen; its images above the base model's, all loaded.
    assert view.selected_row().epoch == 2
    assert len(view.previews) == 8 and all(not p.pixmap().isNull() for p in view.previews)

    # "Use this epoch": that file ticked (alone) in the Generate tab.
    view.use_button.click()
    assert ready.tabs.currentWidget() is ready.generate_tab
    active = ready.generate_tab.adapters.active()
    assert [(p, s) for p, s, _ in active] == [(run / "loras/fake-style-step000012.safetensors",
                                               1.0)]

    # Copy to… the chosen file, into a remembered LoRA folder.
    table.selectRow(3)
    assert view.use_button.text() == "Use epoch 3"
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    loras.mkdir(parents=True)
    ready.store.data.lora_folders = [str(loras)]
    menu = view.copy_button.menu()
    menu.aboutToShow.emit()
    next(a for a in menu.actions() if a.text() == str(loras)).trigger()
    assert (loras / "fake-style-step000018.safetensors").is_file()
    # The base row has no file to use.
    table.selectRow(0)
    assert not view.use_button.isEnabled() and len(view.previews) == 4


def test_auto_evaluation_shows_progress_and_can_be_cancelled(qtbot, ready, fake_worker):
    fake_worker.steps, fake_worker.delay = 6, 0.25
    tab = ready.train_tab
    with qtbot.waitSignal(tab.evaluation.started, timeout=30000):
        tab.train_button.click()
    run = tab.panel.run_dir
    # Still "running": the Generate tab waits for the GPU, Train waits, Stop cancels.
    assert tab.is_running() and not tab.train_button.isEnabled()
    assert "paused" in ready.tabs.tabText(2)
    qtbot.waitUntil(lambda: tab.evaluation.done >= 1, timeout=20000)
    tab.panel.banner.report_button.click()
    view = tab.report
    assert view.run_dir == run and not view.progress_row.isHidden()
    from studio.runs import loras as lora_catalog
    from studio.runs.project import RunDir

    files = lora_catalog.run_loras(RunDir(run)).checkpoints_oldest_first()
    # 4 images (2 prompts × 2 seeds) for the base and for every LoRA file (per epoch + final)
    assert view.progress.maximum() == 4 * (1 + len(files)) and len(files) >= 2
    assert "left" in view.progress_text.text()  # the worker's ETA, once it has measured some
    assert "Report card" in tab.views.tabText(1)
    with qtbot.waitSignal(tab.run_finished, timeout=20000) as finished:
        view.cancel_button.click()
    assert finished.args == [0, False]
    assert not (run / rc.REPORT_FILE).exists()  # nothing written
    assert "cancelled" in view.message.text() and view.progress_row.isHidden()
    assert view.evaluate_button.text() == "Make report card"
    assert "stop" in [json.loads(c)["cmd"] for c in fake_worker.commands() if c.startswith("{")]
    assert not tab.is_running() and tab.train_button.isEnabled()
    assert "paused" not in ready.tabs.tabText(2)
    assert tab.runs.tree.topLevelItem(0).text(4) == "–"


def test_no_card_when_turned_off_then_made_on_request_with_the_workers_error(
        qtbot, ready, fake_worker, monkeypatch):
    ready.session.update(evaluate_after_training=False)
    tab = ready.train_tab
    assert train(qtbot, ready) == [0, False]
    assert [k for k in fake_worker.kinds if k != "plan-memory"] == ["train"]  # no card made
    assert not (tab.panel.run_dir / rc.REPORT_FILE).exists()
    # The artist asks for it from the runs list; the worker refuses, in its own words.
    monkeypatch.setenv("FAKE_EVAL_MODE", "error")
    tab.runs.report_button.click()
    view = tab.report
    assert "no report card yet" in view.message.text()
    with qtbot.waitSignal(tab.evaluation.finished, timeout=20000):
        view.evaluate_button.click()
    assert "held out no validation images" in view.message.text()
    assert "Validation images" in view.message.text()
    assert not tab.is_running() and tab.train_button.isEnabled()


def test_quick_card_is_asked_for_only_where_the_run_has_samples(qtbot, ready, fake_worker):
    """"Quick" judges the files on the run's in-training samples (`evaluate --quick`): offered
    when the run rendered samples, unticked by default, and the card says it is quick."""
    ready.session.update(evaluate_after_training=False)
    tab = ready.train_tab
    assert train(qtbot, ready) == [0, False]
    run = tab.panel.run_dir
    tab.runs.report_button.click()
    view = tab.report
    assert any((run / "samples").glob("*.png"))  # the fake renders samples each epoch
    assert view.quick_box.isEnabled() and not view.quick_box.isChecked()
    view.quick_box.setChecked(True)
    with qtbot.waitSignal(tab.evaluation.finished, timeout=20000):
        view.evaluate_button.click()
    assert fake_worker.args[-1][:2] == ["evaluate", str(run)] and "--quick" in fake_worker.args[-1]
    # The fake's card is a full one; a quick card is titled as such.
    card = rc.load(run)
    card.settings["quick"] = True
    rc.save(card, run)
    view.reload()
    assert "quick (training samples)" in view.title.text() and view.quick_box.isChecked()
    assert "training samples' prompts" in view.images_title.text()
    # A run without samples: the box is off, and a click makes a full card.
    for png in (run / "samples").glob("*.png"):
        png.unlink()
    view.reload()
    assert not view.quick_box.isEnabled()
    with qtbot.waitSignal(tab.evaluation.finished, timeout=20000):
        view.evaluate_button.click()
    assert "--quick" not in fake_worker.args[-1]


def test_the_card_after_training_is_quick_when_the_settings_say_so(qtbot, ready, fake_worker):
    ready.session.update(quick_report_card=True)
    tab = ready.train_tab
    assert train(qtbot, ready) == [0, False]
    assert fake_worker.args[-1][0] == "evaluate" and "--quick" in fake_worker.args[-1]
