"""One run of the real worker (`python -m training train`) from the GUI, on the tiny model."""

from __future__ import annotations

import pytest

from studio import protocol
from training.demo import draw_shapes
from ui.app_settings import SettingsStore
from ui.main_window import MainWindow
from uihelpers import digests, open_and_wait
from uifixtures import *  # noqa: F403 (pytest fixtures)

pytestmark = pytest.mark.slow


def test_the_real_worker_trains_a_lora_from_the_gui(qtbot, tiny_model, tmp_path):
    images = draw_shapes(tmp_path / "shapes", 6, seed=1)
    before = digests(images)
    window = MainWindow(SettingsStore())  # the default worker command: the real engine
    qtbot.addWidget(window)
    window.show()
    open_and_wait(qtbot, window, images, tiny_model)
    window.session.update(resolution=64, rank=4, alpha=2.0, max_steps=4, batch_size=2,
                          learning_rate=1e-3, output_name="tiny-style", trigger_word="zxq",
                          sample_every_n_epochs=0)  # samples: covered with the fake worker
    tab = window.train_tab
    qtbot.waitUntil(tab.train_button.isEnabled, timeout=10000)
    events = []
    with qtbot.waitSignal(tab.run_finished, timeout=180000) as finished:
        tab.train_button.click()
        tab.worker.event_received.connect(events.append)
    assert finished.args == [0, False], tab.worker.stderr_text()

    names = {e.name for e in events}
    assert {"status", "progress", "done"} <= names
    training = [e for e in events if isinstance(e, protocol.Status) and
                "trainable_params" in e.details][0]
    assert training.details["steps"] == 4 == tab.panel.progress.value()
    assert "Steps: <b>4</b>" in tab.settings.estimate.text()  # the GUI's plan matched
    adapter = tab.panel.adapter
    assert adapter.name == "tiny-style.safetensors" and adapter.is_file()
    assert adapter.parent.parent == window.session.project.runs
    assert "Finished" in tab.runs.tree.topLevelItem(0).text(1)
    assert digests(images) == before


def test_a_kohya_folder_dropped_on_the_window_trains_with_its_repeats(qtbot, tiny_model, tmp_path):
    # kohya layout: nothing at the top, `3_ink/` and `1_wash/` repeat their images 3× and 1×.
    folder = tmp_path / "kohya art"
    draw_shapes(folder / "3_ink", 2, seed=1)
    draw_shapes(folder / "1_wash", 2, seed=2)
    window = MainWindow(SettingsStore())  # the real engine
    qtbot.addWidget(window)
    window.show()
    open_and_wait(qtbot, window, folder, tiny_model)
    window.session.update(resolution=64, rank=4, alpha=2.0, epochs=1, max_steps=0, batch_size=2,
                          learning_rate=1e-3, output_name="kohya-style", sample_every_n_epochs=0,
                          validation_images=0, evaluate_after_training=False)
    tab = window.train_tab
    qtbot.waitUntil(tab.train_button.isEnabled, timeout=10000)
    assert "Steps: <b>4</b>" in tab.settings.estimate.text()  # (2×3 + 2×1) images / batch 2
    events = []
    with qtbot.waitSignal(tab.run_finished, timeout=180000) as finished:
        tab.train_button.click()
        tab.worker.event_received.connect(events.append)
    assert finished.args == [0, False], tab.worker.stderr_text()
    training = [e for e in events if isinstance(e, protocol.Status) and
                "trainable_params" in e.details][0]
    assert training.details["steps"] == 4 == tab.panel.progress.value()
    assert tab.panel.adapter.is_file()
