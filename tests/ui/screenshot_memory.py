"""Screenshots of the Train tab's GPU memory figure (ui/memory_panel.py) with the fake planner:
predicting, over budget for a 6 GB card, after Fit to my GPU, and a fit that finds nothing. Run under Xvfb like
screenshot_app.py:

    xvfb-run -a -s "-screen 0 1920x1080x24" python tests/ui/screenshot_memory.py OUT
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from PySide6.QtWidgets import QApplication  # noqa: E402

import artset  # noqa: E402
from screenshot_app import FAKE, capture, settle, wait_until  # noqa: E402
from ui import device, theme  # noqa: E402
from ui.app_settings import SettingsStore  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.worker import WorkerProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1280x800")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    os.environ.setdefault("LORA_STUDIO_HOME", str(work / "home"))
    images = artset.make(work / "ink studies", n=12, problems=False)
    model = artset.fake_model(work / "sd15")
    device.gpus = lambda: ()  # a machine without an NVIDIA GPU: the artist picks the card

    app = QApplication(sys.argv[:1])
    theme.apply(app)
    env = {"FAKE_PLAN_DELAY": "2.5"}
    window = MainWindow(SettingsStore(),
                        lambda: WorkerProcess([sys.executable, "-u", str(FAKE)], env=env))
    window.move(0, 0)
    w, h = (int(v) for v in args.size.split("x"))
    window.resize(w, h)
    window.show()
    assert window.open_path(images)
    window.session.update(base_model=str(model), trigger_word="inkwash")
    assert wait_until(app, lambda: window.session.report is not None), "no dataset scan"
    window.tabs.setCurrentIndex(1)
    panel = window.train_tab.settings.memory
    panel.card.setCurrentIndex(next(i for i in range(panel.card.count())
                                    if panel.card.itemData(i).memory_bytes == 6 * device.GIB))
    window.train_tab.settings.ensureWidgetVisible(panel)
    assert wait_until(app, lambda: panel.planner.state == "predicting", 10)
    capture(app, window, args.out / f"train-memory-predicting-{args.size}.png")
    assert wait_until(app, lambda: panel.planner.plan is not None, 30), "no plan"
    settle(app)
    capture(app, window, args.out / f"train-memory-over-{args.size}.png")
    panel.fit_button.click()
    assert wait_until(app, lambda: not panel.revert_button.isHidden(), 30), "no fit"
    assert wait_until(app, lambda: panel.planner.plan is not None and
                      panel.planner.plan.settings.gradient_checkpointing, 10)
    window.train_tab.settings.ensureWidgetVisible(panel.fit_result)
    capture(app, window, args.out / f"train-memory-fit-{args.size}.png")
    # Samples too big for a 6 GB card whatever the settings: the fit says so, and what to do.
    panel.revert_button.click()
    env["FAKE_PLAN_SAMPLING_GIB"] = "7"
    panel.fit_button.click()
    assert wait_until(app, lambda: panel.fit_result.text().startswith("Fitting"), 10)
    capture(app, window, args.out / f"train-memory-fitting-{args.size}.png")
    assert wait_until(app, lambda: panel.fit_result.text().startswith("Nothing"), 30)
    window.train_tab.settings.ensureWidgetVisible(panel.fit_result)
    settle(app)
    capture(app, window, args.out / f"train-memory-nothing-fits-{args.size}.png")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
