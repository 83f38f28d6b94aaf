"""GUI test fixtures: an isolated settings/data home, an artist's folder, a fake model, the fake
worker, and the main window wired to it.

Test modules import them all (`from uifixtures import *`). This is deliberately not a
tests/ui/conftest.py: a second conftest module would replace `sys.modules["conftest"]` and break
the `from conftest import ...` that tests elsewhere do at run time."""

from __future__ import annotations

from pathlib import Path

import pytest

import artset
from uihelpers import FakeWorkerFactory

__all__ = ["studio_home", "art", "clean_art", "sd15", "fake_worker", "window"]


@pytest.fixture(autouse=True)
def studio_home(tmp_path, monkeypatch) -> Path:
    """Settings and projects go to a temporary folder, never to the real user's."""
    home = tmp_path / "home"
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    return home


@pytest.fixture
def art(tmp_path) -> Path:
    return artset.make(tmp_path / "my art", n=8)


@pytest.fixture
def clean_art(tmp_path) -> Path:
    return artset.make(tmp_path / "clean art", n=6, problems=False)


@pytest.fixture
def sd15(tmp_path) -> Path:
    return artset.fake_model(tmp_path / "sd15")


@pytest.fixture
def fake_worker(tmp_path) -> FakeWorkerFactory:
    factory = FakeWorkerFactory(tmp_path / "worker-stdin.txt")
    yield factory
    import shiboken6

    for worker in factory.created:  # never leave a child process behind
        if shiboken6.isValid(worker) and worker.is_running():
            worker._proc.kill()
            worker.wait(5000)


@pytest.fixture
def window(qtbot, fake_worker):
    from ui.app_settings import SettingsStore
    from ui.main_window import MainWindow

    win = MainWindow(SettingsStore(), fake_worker)
    win.confirm_stop = lambda: True
    qtbot.addWidget(win)
    win.show()
    return win
