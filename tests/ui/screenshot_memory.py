"""Screenshots of the Train tab's GPU memory figure (ui/memory_panel.py). With the fake planner:
predicting, over budget for a 6 GB card, after Fit to my GPU, and a fit that finds nothing.
With `--real`: the real planner (`python -m training plan-memory`) on SDXL's shipped configs at
1024 px for an 8 GB card, before and after Fit to my GPU, with the seconds each took. Run under
Xvfb like screenshot_app.py:

    xvfb-run -a -s "-screen 0 1920x1080x24" python tests/ui/screenshot_memory.py OUT [--real]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from PIL import Image  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import artset  # noqa: E402
from screenshot_app import FAKE, capture, settle, wait_until  # noqa: E402
from ui import device, theme  # noqa: E402
from ui.app_settings import SettingsStore  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.worker import WorkerProcess  # noqa: E402


def fake_planner(app, window, panel, out: Path, size: str, env: dict) -> None:
    assert wait_until(app, lambda: panel.planner.state == "predicting", 10)
    capture(app, window, out / f"train-memory-predicting-{size}.png")
    assert wait_until(app, lambda: panel.planner.plan is not None, 30), "no plan"
    settle(app)
    capture(app, window, out / f"train-memory-over-{size}.png")
    panel.fit_button.click()
    assert wait_until(app, lambda: not panel.revert_button.isHidden(), 30), "no fit"
    assert wait_until(app, lambda: panel.planner.plan is not None and
                      panel.planner.plan.settings.gradient_checkpointing, 10)
    window.train_tab.settings.ensureWidgetVisible(panel.fit_result)
    capture(app, window, out / f"train-memory-fit-{size}.png")
    # Samples too big for a 6 GB card whatever the settings: the fit says so, and what to do.
    panel.revert_button.click()
    env["FAKE_PLAN_SAMPLING_GIB"] = "7"
    panel.fit_button.click()
    assert wait_until(app, lambda: panel.fit_result.text().startswith("Fitting"), 10)
    capture(app, window, out / f"train-memory-fitting-{size}.png")
    assert wait_until(app, lambda: panel.fit_result.text().startswith("Nothing"), 30)
    window.train_tab.settings.ensureWidgetVisible(panel.fit_result)
    settle(app)
    capture(app, window, out / f"train-memory-nothing-fits-{size}.png")


def real_planner(app, window, panel, out: Path, size: str) -> None:
    started = time.monotonic()
    assert wait_until(app, lambda: panel.planner.plan is not None and
                      panel.planner.state == "idle", 120), f"no plan: {panel.planner.error}"
    print(f"plan shown after {time.monotonic() - started:.1f} s", flush=True)
    settle(app)
    capture(app, window, out / f"train-memory-real-sdxl-{size}.png")
    panel.fit_button.click()
    started = time.monotonic()
    assert wait_until(app, lambda: panel.planner.state == "idle" and
                      not panel.fit_result.text().startswith("Fitting"), 180), "no fit"
    print(f"fit shown after {time.monotonic() - started:.1f} s: {panel.fit_result.text()}",
          flush=True)
    window.train_tab.settings.ensureWidgetVisible(panel.fit_result)
    settle(app)
    capture(app, window, out / f"train-memory-real-sdxl-fit-{size}.png")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1280x800")
    parser.add_argument("--real", action="store_true", help="the real planner, SDXL, 8 GB")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    os.environ.setdefault("LORA_STUDIO_HOME", str(work / "home"))
    images = artset.make(work / "ink studies", n=12, problems=False)
    device.gpus = lambda: ()  # a machine without an NVIDIA GPU: the artist picks the card
    env = {"FAKE_PLAN_DELAY": "2.5"}
    if args.real:
        for path in images.glob("*.jpg"):  # SDXL's own size: the plan counts 1024 px buckets
            Image.open(path).resize((1024, 1024)).save(path, quality=88)
        model = work / "sdxl"  # the shipped configs without weights: all the planner reads
        if not model.exists():
            shutil.copytree(ROOT / "assets" / "configs" / "sdxl-base", model)
        settings, card_gb, workers = dict(resolution=1024, sample_every_n_epochs=1), 8, {}
    else:
        model, settings, card_gb = artset.fake_model(work / "sd15"), {}, 6
        workers = {"worker_factory": lambda: WorkerProcess([sys.executable, "-u", str(FAKE)],
                                                           env=env)}

    app = QApplication(sys.argv[:1])
    theme.apply(app)
    window = MainWindow(SettingsStore(), **workers)
    window.move(0, 0)
    w, h = (int(v) for v in args.size.split("x"))
    window.resize(w, h)
    window.show()
    assert window.open_path(images)
    window.session.update(base_model=str(model), trigger_word="inkwash", **settings)
    assert wait_until(app, lambda: window.session.report is not None), "no dataset scan"
    window.tabs.setCurrentIndex(1)
    panel = window.train_tab.settings.memory
    panel.card.setCurrentIndex(next(i for i in range(panel.card.count())
                                    if panel.card.itemData(i).memory_bytes ==
                                    card_gb * device.GIB))
    window.train_tab.settings.ensureWidgetVisible(panel)
    if args.real:
        real_planner(app, window, panel, args.out, args.size)
    else:
        fake_planner(app, window, panel, args.out, args.size, env)
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
