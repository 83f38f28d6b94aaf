"""Drive the real app window through its screens and save screenshots (run by test_screenshots.py
under Xvfb, or by hand: `python tests/ui/screenshot_app.py OUT --model DIR --images DIR`).

Under the xcb platform the pictures come from the X server's framebuffer (what a person would
see); under offscreen they come from QWidget.grab(). Training runs against tests/fake_worker.py so
the Train tab shows a live run in seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QEventLoop  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from ui import theme  # noqa: E402
from ui.app_settings import SettingsStore  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.worker import WorkerProcess  # noqa: E402

FAKE = ROOT / "tests" / "fake_worker.py"


def wait_until(app: QApplication, condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        if condition():
            return True
        time.sleep(0.01)
    return False


def settle(app: QApplication, seconds: float = 0.4) -> None:
    wait_until(app, lambda: False, seconds)


def capture(app: QApplication, window: MainWindow, path: Path) -> None:
    settle(app)
    if app.platformName() == "xcb":
        geo = window.frameGeometry()
        pixmap = app.primaryScreen().grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height())
    else:
        pixmap = window.grab()
    pixmap.save(str(path))
    print(f"saved {path} ({pixmap.width()}x{pixmap.height()})", flush=True)


def generate_screens(app: QApplication, window: MainWindow, out: Path, size: str,
                     first: bool) -> None:
    """The Generate tab: as opened from the finished run, a result, with / without, a grid."""
    from uihelpers import write_lora

    run = window.train_tab.panel.run_dir
    for step in (50, 100):  # checkpoints, as a longer real run has them: rows of the grid
        write_lora(run / "checkpoints" / f"fake-style-step{step:06d}.safetensors",
                   {"modelspec.trigger_phrase": "inkwash", "ss_steps": str(step)})
    window.train_tab.panel.banner.open_button.click()  # "Open in Generate"
    tab = window.generate_tab
    if first:
        capture(app, window, out / f"generate-{size}.png")
    tab.form.prompt.setPlainText("inkwash, a heron standing in the reeds at dawn, mist, "
                                 "soft washes of ink")
    tab.form.negative.setPlainText("blurry, lowres, watermark, text")
    tab.form.count.setValue(4)
    tab.adapters.rows[0].set_strength(0.85)
    tab.generate()
    assert wait_until(app, lambda: not tab.preview.busy() and not tab.jobs, 60), "no images"
    capture(app, window, out / f"generate-result-{size}.png")
    tab.compare_with_without()
    assert wait_until(app, lambda: not tab.preview.busy() and not tab.jobs, 60), "no compare"
    capture(app, window, out / f"generate-compare-{size}.png")
    tab.views.setCurrentWidget(tab.grid)
    tab.grid.button.click()
    assert wait_until(app, lambda: not tab.preview.busy() and not tab.jobs, 60), "no grid"
    assert tab.grid.path is not None, tab.error.text()
    capture(app, window, out / f"generate-grid-{size}.png")
    tab.views.setCurrentWidget(tab.result)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--sizes", default="1280x800,1920x1080")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LORA_STUDIO_HOME", str(args.out / "home"))

    app = QApplication(sys.argv[:1])
    theme.apply(app)
    env = {"FAKE_WORKER_STEPS": "150", "FAKE_WORKER_DELAY": "0.03", "FAKE_SERVE_DELAY": "0.002"}
    window = MainWindow(SettingsStore(),
                        lambda: WorkerProcess([sys.executable, "-u", str(FAKE)], env=env))
    window.move(0, 0)
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        window.resize(w, h)
        window.show()
        window.activateWindow()
        window.close_project()  # each size starts at the welcome screen
        capture(app, window, args.out / f"welcome-{size}.png")
        window.store.data.recent_models = [str(args.model)]
        assert window.open_path(args.images)
        window.session.update(base_model=str(args.model), trigger_word="inkwash")
        ok = wait_until(app, lambda: window.session.report is not None
                        and window.dataset_tab.loader.pending() == 0)
        assert ok, "the dataset was not examined in time"
        window.tabs.setCurrentIndex(0)
        window.dataset_tab.select_image(window.dataset_tab.model.images[1])
        wait_until(app, lambda: window.dataset_tab.loader.pending() == 0, 10)
        capture(app, window, args.out / f"dataset-{size}.png")

        window.tabs.setCurrentIndex(1)
        window.train_tab.settings.more.set_expanded(size != args.sizes.split(",")[0])
        settle(app)
        capture(app, window, args.out / f"train-settings-{size}.png")
        tab = window.train_tab
        if size == args.sizes.split(",")[0]:  # how invalid input looks, once
            tab.settings.editor("resolution").editor.setValue(500)
            tab.settings.editor("learning_rate").editor.setText("fast")
            capture(app, window, args.out / f"train-invalid-{size}.png")
            tab.settings.editor("resolution").editor.setValue(512)
            tab.settings.editor("learning_rate").editor.setText("1e-4")
        if window.session.report.blocking():  # what the artist is told to do: exclude them
            capture(app, window, args.out / f"train-blocked-{size}.png")
            window.dataset_tab.set_excluded([f.path for f in window.session.report.blocking()],
                                            True)
            settle(app)
        assert tab.train_button.isEnabled(), tab.reason.text()
        tab.start_training()
        assert wait_until(app, lambda: tab.panel.progress.value() >= 80, 30), "no progress"
        capture(app, window, args.out / f"train-running-{size}.png")
        if size == args.sizes.split(",")[0]:  # the Generate tab while training runs, once
            window.tabs.setCurrentIndex(2)
            capture(app, window, args.out / f"generate-paused-{size}.png")
            window.tabs.setCurrentIndex(1)
        assert wait_until(app, lambda: not tab.is_running(), 30), "the run did not finish"
        capture(app, window, args.out / f"train-done-{size}.png")
        tab.lower.setCurrentIndex(1)
        capture(app, window, args.out / f"train-runs-{size}.png")
        tab.lower.setCurrentIndex(0)

        generate_screens(app, window, args.out, size, first=size == args.sizes.split(",")[0])
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
