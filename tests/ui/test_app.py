"""The app as a whole: start-up (fast, no torch), settings that never stop it, reopening the last
project, the demo without its assets, drag and drop, and the PySide6 refcount workaround."""

from __future__ import annotations

import os
import subprocess
import sys

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from studio import settings
from studio.runs import demo
from studio.runs import workspace
from ui import app
from ui.app_settings import SettingsStore
from ui.main_window import MainWindow
from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import ROOT

ML = {"torch", "diffusers", "transformers", "peft", "accelerate", "training"}


def python(code: str, home, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LORA_STUDIO_HOME=str(home))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_gui_never_imports_the_ml_stack(studio_home, clean_art):
    # A whole session in a clean interpreter: window, a project opened and examined.
    probe = f"""
import sys, time
from PySide6.QtWidgets import QApplication
from ui.app_settings import SettingsStore
from ui.main_window import MainWindow
import ui.app, ui.train_tab, ui.dataset_tab, ui.worker
qt = QApplication([])
window = MainWindow(SettingsStore())
window.show()
assert window.open_path({str(clean_art)!r})
deadline = time.time() + 60
while window.session.report is None and time.time() < deadline:
    qt.processEvents()
assert window.session.report is not None
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    result = python(probe, studio_home)
    assert result.returncode == 0, result.stderr
    assert not set(result.stdout.split()) & ML


def test_python_m_ui_shows_the_window(studio_home):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LORA_STUDIO_HOME=str(studio_home))
    result = subprocess.run([sys.executable, "-m", "ui", "--quit-after-start"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "visible=True" in result.stdout
    print(result.stdout)  # the start-up time, for the record (no timing assert: shared CPU)


def test_a_broken_settings_file_never_stops_the_app(qtbot, studio_home):
    path = settings.default_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\xff not toml [[[")
    window = MainWindow(SettingsStore())
    qtbot.addWidget(window)
    window.show()
    assert "could not be read" in window.statusBar().currentMessage()
    window.close()
    assert settings.load(path).warnings == []  # closing wrote a valid file


def test_the_last_project_is_reopened(qtbot, clean_art):
    project = workspace.open_folder(clean_art)
    store = SettingsStore()
    store.data.remember_project(project.root)
    store.save()
    window = MainWindow(SettingsStore())
    qtbot.addWidget(window)
    app.open_initial(window, app.build_parser().parse_args([]))
    assert window.session.project == project
    assert window.welcome.recent.count() == 1


def test_the_demo_without_its_assets_says_so(qtbot, monkeypatch):
    monkeypatch.setattr(demo, "assets_present", lambda: False)
    window = MainWindow(SettingsStore())
    qtbot.addWidget(window)
    window.welcome.update_demo_state()
    app.open_initial(window, app.build_parser().parse_args(["--demo"]))
    assert window.session.project is None
    assert "demo assets" in window.statusBar().currentMessage()
    assert not window.welcome.demo_button.isEnabled()
    assert "not installed" in window.welcome.demo_note.text()


def test_dropping_a_folder_opens_it(qtbot, window, clean_art):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(clean_art))])
    event = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.session.project is not None
    assert window.session.dataset_dir == clean_art.resolve()


def test_dropping_a_folder_without_images_explains(qtbot, window, tmp_path):
    (tmp_path / "empty").mkdir()
    assert not window.open_path(tmp_path / "empty")
    assert "no images" in window.statusBar().currentMessage()
    assert window.session.project is None


def test_the_pyside_none_refcount_workaround_holds(studio_home):
    # Without ui/compat.py this aborts with "Fatal Python error: none_dealloc" (PySide6 6.12.0
    # on Python 3.11 drops a reference to None on every void call).
    code = ("import ui\nfrom PySide6.QtCore import QPointF\np = QPointF()\n"
            "for _ in range(300_000):\n    p.setX(1.0)\nprint('alive')")
    result = python(code, studio_home)
    assert result.returncode == 0 and "alive" in result.stdout, result.stderr
