"""The Train tab with the fake worker: live progress, stop, kill after grace, crash and settings
errors, warnings, outputs, and closing the window during a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio import protocol
from studio.runs import report_card
from studio.safetensors_header import read_header
from ui import outputs
from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import open_and_wait


@pytest.fixture
def ready(qtbot, window, clean_art, sd15):
    """The window with a clean dataset and a usable model: Train is enabled."""
    open_and_wait(qtbot, window, clean_art, sd15)
    assert window.train_tab.train_button.isEnabled(), window.train_tab.reason.text()
    return window


def run(qtbot, window, timeout=30000):
    tab = window.train_tab
    with qtbot.waitSignal(tab.run_finished, timeout=timeout) as finished:
        tab.train_button.click()
    return finished.args


def test_progress_loss_samples_and_the_result(qtbot, ready, fake_worker, tmp_path, monkeypatch):
    fake_worker.steps = 30
    tab, panel = ready.train_tab, ready.train_tab.panel
    assert run(qtbot, ready) == [0, False]
    assert panel.progress.maximum() == panel.progress.value() == 30
    assert panel.plot.steps == list(range(1, 31)) and len(panel.plot.validation) == 3
    assert len(panel.samples.buttons) == 2
    assert "Done" in panel.banner.title.text() and not panel.banner.isHidden()
    assert panel.adapter.is_file() and panel.adapter.parent.parent == ready.session.project.runs
    assert "epoch" in panel.detail.text() and "ETA" in panel.detail.text()
    assert tab.runs.tree.topLevelItemCount() == 1
    assert "Finished" in tab.runs.tree.topLevelItem(0).text(1)
    assert tab.train_button.isEnabled() and not tab.stop_button.isEnabled()

    opened = []
    monkeypatch.setattr(outputs, "open_folder", opened.append)
    panel.banner.show_button.click()
    assert opened == [panel.adapter]

    loras = tmp_path / "ComfyUI" / "models" / "loras"
    loras.mkdir(parents=True)
    ready.store.data.lora_folders = [str(loras)]
    menu = panel.banner.copy_button.menu()
    menu.aboutToShow.emit()
    next(a for a in menu.actions() if a.text() == str(loras)).trigger()
    # The copy is the run's file with the report card's recommendation added to its header
    # (studio/runs/deliver.py): the same tensors, byte for byte, after the header.
    copy = loras / panel.adapter.name
    assert data_section(copy) == data_section(panel.adapter)
    card = report_card.load(panel.adapter.parent)
    assert read_header(copy)[1] == {**read_header(panel.adapter)[1],
                                    **(card.metadata if card else {})}


def data_section(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


def test_library_noise_stays_out_of_the_log_until_asked_for(qtbot, ready, fake_worker):
    fake_worker.steps = 3
    log = ready.train_tab.panel.log
    run(qtbot, ready)
    text = log.toPlainText()
    assert "INFO training on the CPU" in text  # the engine's own lines stay
    assert "torchvision" not in text and "Loading pipeline components" not in text
    assert log.hidden.text() == "2 library messages hidden"
    log.details.setChecked(True)
    assert "requires torchvision" in log.toPlainText() and log.hidden.text() == ""
    assert log.toPlainText().index("torchvision") < log.toPlainText().index("INFO training")


def test_stop_sends_the_stop_command_and_keeps_the_lora(qtbot, ready, fake_worker):
    fake_worker.steps, fake_worker.delay = 500, 0.02
    tab = ready.train_tab
    tab.train_button.click()
    assert tab.is_running() and tab.stop_button.isEnabled() and not tab.train_button.isEnabled()
    qtbot.waitUntil(lambda: tab.panel.progress.value() >= 3, timeout=20000)
    with qtbot.waitSignal(tab.run_finished, timeout=20000) as finished:
        tab.stop_button.click()
    assert finished.args == [0, False]
    assert fake_worker.commands()[0] == protocol.command("stop")
    assert "Stopped early" in tab.panel.banner.title.text()
    assert "Stopped" in tab.runs.tree.topLevelItem(0).text(1)


def test_a_hung_worker_is_killed_after_the_grace_period(qtbot, ready, fake_worker):
    fake_worker.mode, fake_worker.grace_ms = "hang", 500
    tab = ready.train_tab
    tab.train_button.click()
    qtbot.waitUntil(lambda: tab.panel.progress.value() >= 3, timeout=20000)
    with qtbot.waitSignal(tab.run_finished, timeout=20000) as finished:
        tab.stop_button.click()
    assert finished.args == [-9, True]
    assert "stopped by force" in tab.panel.banner.title.text()
    assert not tab.is_running() and tab.train_button.isEnabled()


def test_a_crash_shows_the_end_of_stderr_and_a_hint(qtbot, ready, fake_worker):
    fake_worker.mode = "crash"
    code, crashed = run(qtbot, ready)
    banner = ready.train_tab.panel.banner
    assert code == 134 and "crashed (exit code 134)" in banner.title.text()
    assert "CUDA out of memory" in banner.body.text()  # the end of stderr
    assert "GPU ran out of memory" in banner.body.text()  # mapped to what to do


def test_a_settings_error_names_the_field_and_leaves_no_empty_run(qtbot, ready, fake_worker):
    fake_worker.mode = "error"
    assert run(qtbot, ready) == [2, False]
    panel = ready.train_tab.panel
    assert "could not run" in panel.banner.title.text()
    assert "multiple of 8" in panel.banner.body.text()
    assert "Fix the settings" in panel.banner.body.text()
    assert not panel.banner.field_button.isHidden()
    with qtbot.waitSignal(panel.field_requested) as requested:
        panel.banner.field_button.click()
    assert requested.args == ["resolution"]
    assert not ready.session.project.runs.exists()  # the rejected run left nothing


def test_an_error_with_suggested_settings_offers_to_apply_them(qtbot, ready, fake_worker):
    fake_worker.mode = "oom"
    ready.session.update(batch_size=4)
    assert run(qtbot, ready) == [1, False]
    banner = ready.train_tab.panel.banner
    assert "Training failed" in banner.title.text() and not banner.fix_button.isHidden()
    banner.fix_button.click()
    assert ready.session.config.batch_size == 1 and ready.session.config.gradient_checkpointing
    assert ready.train_tab.settings.editor("gradient_checkpointing").editor.isChecked()


def test_the_worker_alone_creates_the_run_folder(qtbot, ready, fake_worker, monkeypatch):
    import os

    made = []  # folders this (the GUI's) process creates; the worker is another process
    real_mkdir = os.mkdir
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: (made.append(Path(path)),
                                                           real_mkdir(path, *a, **k))[1])
    runs = ready.session.project.runs
    assert run(qtbot, ready) == [0, False]
    panel = ready.train_tab.panel
    assert panel.run_dir is not None and panel.run_dir.parent == runs  # from the status event
    assert (panel.run_dir / "config.toml").is_file() and panel.adapter.parent == panel.run_dir
    assert not [p for p in made if p == runs or runs in p.parents]


def test_a_stopped_run_can_be_resumed(qtbot, ready, fake_worker):
    fake_worker.steps, fake_worker.delay = 500, 0.02
    tab = ready.train_tab
    tab.train_button.click()
    qtbot.waitUntil(lambda: tab.panel.progress.value() >= 3, timeout=20000)
    with qtbot.waitSignal(tab.run_finished, timeout=20000):
        tab.stop_button.click()
    run_dir = tab.panel.run_dir
    assert tab.runs.selected().resumable and tab.runs.resume_button.isEnabled()
    fake_worker.steps, fake_worker.delay = 20, 0.01
    with qtbot.waitSignal(tab.run_finished, timeout=20000) as finished:
        tab.runs.resume_button.click()
    assert finished.args == [0, False]
    assert "Resuming" in tab.panel.log.toPlainText() and tab.panel.run_dir == run_dir
    assert tab.runs.tree.topLevelItemCount() == 1  # the same run, continued
    assert "Finished" in tab.runs.tree.topLevelItem(0).text(1)


def test_warnings_are_shown_while_training_goes_on(qtbot, ready, fake_worker):
    fake_worker.mode = "warn"
    assert run(qtbot, ready) == [0, False]
    warning = ready.train_tab.panel.warning
    assert not warning.isHidden() and "slower than expected" in warning.text()


def test_closing_the_window_stops_the_run_gracefully(qtbot, ready, fake_worker):
    fake_worker.steps, fake_worker.delay = 500, 0.02
    tab = ready.train_tab
    tab.train_button.click()
    qtbot.waitUntil(lambda: tab.panel.progress.value() >= 3, timeout=20000)
    assert ready.close() is False  # not yet: the worker is asked to stop and save first
    assert ready.isVisible()
    qtbot.waitUntil(lambda: not ready.isVisible(), timeout=20000)
    assert protocol.command("stop") in fake_worker.commands()
    assert not tab.is_running() and tab.panel.adapter.is_file()


def test_closing_while_the_run_finishes_closes_once_the_save_is_done(qtbot, ready, fake_worker):
    # The artist clicks close near the end; while the question is open the run finishes and
    # saves. Answering "Yes" must then close the window, not leave it waiting for a second click.
    fake_worker.steps, fake_worker.delay = 40, 0.02
    tab = ready.train_tab

    def answer_after_the_run_ended() -> bool:
        qtbot.waitUntil(lambda: not tab.is_running(), timeout=20000)
        return True

    ready.confirm_stop = answer_after_the_run_ended
    tab.train_button.click()
    qtbot.waitUntil(lambda: tab.panel.progress.value() >= 3, timeout=20000)
    ready.close()
    qtbot.waitUntil(lambda: not ready.isVisible(), timeout=2000)
    assert tab.panel.adapter.is_file()
