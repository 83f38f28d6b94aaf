"""One image from the real generation worker (`python -m training serve`) through the Generate
tab, on the tiny model with a real LoRA file."""

from __future__ import annotations

import pytest
from PIL import Image

from studio import infotext, protocol
from ui.app_settings import SettingsStore
from ui.main_window import MainWindow
from uifixtures import *  # noqa: F403 (pytest fixtures)

pytestmark = pytest.mark.slow


def test_the_real_serve_worker_generates_through_the_tab(qtbot, tiny_model, lora_files,
                                                         tmp_path):
    from conftest import make_project

    root = make_project(tmp_path / "project", tiny_model)
    window = MainWindow(SettingsStore())  # the default worker command: the real engine
    qtbot.addWidget(window)
    window.show()
    assert window.open_path(root)
    tab = window.generate_tab
    window.tabs.setCurrentWidget(tab)
    assert tab.form.width_box.value() == 64  # the project's training resolution
    row = tab.adapters.add_file(lora_files[0])
    assert row.trigger.text() == "+ zxq" or not row.trigger.isEnabled()
    tab.form.prompt.setPlainText("zxq, a red circle")
    tab.form.steps.setValue(3)
    tab.form.sampler.setCurrentText("DPM++ 2M")
    events = []
    tab.preview.progress.connect(lambda job, e: events.append(e))
    with qtbot.waitSignal(tab.preview.idle, timeout=300000):
        tab.generate_button.click()
    assert tab.error.isHidden(), tab.error.text()
    assert [(e.image, e.step) for e in events] == [(0, 1), (0, 2), (0, 3)]
    assert all(isinstance(e, protocol.GenProgress) for e in events)

    path = tab.history.paths()[0]
    assert tab.result.path == path and path.parent == root / "generated"
    image = Image.open(path)
    assert image.size == (64, 64)
    params = infotext.parse(image.text["parameters"])
    assert params.loras == (("tiny-step50", 1.0),)
    assert (params.steps, params.sampler, params.seed) == (3, "DPM++ 2M", tab.form.seed.value())
    assert "tiny-step50 1" in tab.result.info.text()

    with qtbot.waitSignal(tab.preview.stopped, timeout=60000):
        assert tab.preview.stop() is False  # quit + stdin closed: the worker exits by itself
