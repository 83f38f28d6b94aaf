"""The real worker trains from the window on every kind of base model the Train tab accepts: an
SD1.5 single file, an SDXL folder and an SDXL single file (tiny, with the shipped configs at tiny
sizes), and `python -m training check` accepts the same projects (issue 12)."""

from __future__ import annotations

import pytest

from conftest import run_cli
from studio.base_model import configs
from studio.safetensors_header import read_header
from training.demo import draw_shapes
from ui.app_settings import SettingsStore
from ui.main_window import MainWindow
from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import open_and_wait

pytestmark = pytest.mark.slow

VERSIONS = {"sd15_file": "sd_v1", "sdxl_folder": "sdxl_base_v1-0", "sdxl_file": "sdxl_base_v1-0"}


@pytest.fixture(scope="module")
def single_files(tmp_path_factory):
    """Tiny SD1.5 and SDXL single files and the config root they load with."""
    from training import tiny_model

    root = tmp_path_factory.mktemp("single-files")
    return root / "configs", {
        "sd15_file": tiny_model.build_single_file(root / "tiny-sd15.safetensors", "sd1",
                                                  root / "configs"),
        "sdxl_file": tiny_model.build_single_file(root / "tiny-sdxl.safetensors", "sdxl",
                                                  root / "configs", seed=2)}


@pytest.mark.parametrize("kind", list(VERSIONS))
def test_each_base_model_kind_trains_from_the_window(qtbot, kind, single_files, tiny_sdxl,
                                                     tmp_path, monkeypatch):
    config_root, files = single_files
    # Read by the GUI's verdict here and by the worker processes (they inherit the environment).
    monkeypatch.setenv(configs.CONFIGS_ENV, str(config_root))
    model = tiny_sdxl if kind == "sdxl_folder" else files[kind]
    images = draw_shapes(tmp_path / "shapes", 6, seed=1)
    window = MainWindow(SettingsStore())  # the default worker command: the real engine
    qtbot.addWidget(window)
    window.show()
    project = open_and_wait(qtbot, window, images, model)
    settings = window.train_tab.settings
    assert settings.model_info.ok and settings.model_info.native_resolution == 64
    window.session.update(resolution=64, rank=4, alpha=2.0, max_steps=2, batch_size=2,
                          learning_rate=1e-3, output_name="tiny-style", trigger_word="zxq",
                          sample_every_n_epochs=0)
    tab = window.train_tab
    qtbot.waitUntil(tab.train_button.isEnabled, timeout=10000)
    assert settings.resolution_hint.isHidden()
    with qtbot.waitSignal(tab.run_finished, timeout=240000) as finished:
        tab.train_button.click()
    assert finished.args == [0, False], tab.worker.stderr_text()
    adapter = tab.panel.adapter
    assert adapter.is_file() and adapter.parent.parent == project.runs
    _, meta = read_header(adapter)
    assert meta["ss_base_model_version"] == VERSIONS[kind]

    check = run_cli("check", str(project.root), "--json")
    assert check.returncode == 0, check.stderr[-2000:]
    report = check.events[0]
    assert report["ok"] and report["model"]["problem"] == ""
    assert report["model"]["architecture"] == ("SD 1.x" if kind == "sd15_file" else "SDXL")
    assert report["model"]["resolution_warning"] == ""
