"""Screenshots of the Train tab's GPU memory figure with the real planner (`python -m training
plan-memory`, no fake worker) on SDXL's shipped configs at 1024 px: the prediction for an 8 GB
card, then Fit to my GPU. Run under Xvfb like screenshot_app.py:

    xvfb-run -a -s "-screen 0 1920x1080x24" python tests/ui/screenshot_real_planner.py OUT
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
from screenshot_app import capture, settle, wait_until  # noqa: E402
from ui import device, theme  # noqa: E402
from ui.app_settings import SettingsStore  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1280x800")
    parser.add_argument("--card-gb", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    os.environ.setdefault("LORA_STUDIO_HOME", str(work / "home"))
    images = artset.make(work / "ink studies 1024", n=12, problems=False)
    for path in images.glob("*.jpg"):  # SDXL's own size: the planner counts 1024 px buckets
        Image.open(path).resize((1024, 1024)).save(path, quality=88)
    model = work / "sdxl"  # the shipped configs, no weights: all the planner reads
    if not model.exists():
        shutil.copytree(ROOT / "assets" / "configs" / "sdxl-base", model)
    device.gpus = lambda: ()  # no NVIDIA GPU here: the artist picks the card

    app = QApplication(sys.argv[:1])
    theme.apply(app)
    window = MainWindow(SettingsStore())  # the real worker: python -m training
    window.move(0, 0)
    w, h = (int(v) for v in args.size.split("x"))
    window.resize(w, h)
    window.show()
    assert window.open_path(images)
    window.session.update(base_model=str(model), trigger_word="inkwash", resolution=1024,
                          sample_every_n_epochs=1)
    assert wait_until(app, lambda: window.session.report is not None), "no dataset scan"
    window.tabs.setCurrentIndex(1)
    panel = window.train_tab.settings.memory
    panel.card.setCurrentIndex(next(i for i in range(panel.card.count())
                                    if panel.card.itemData(i).memory_bytes ==
                                    args.card_gb * device.GIB))
    window.train_tab.settings.ensureWidgetVisible(panel)
    started = time.monotonic()
    assert wait_until(app, lambda: panel.planner.plan is not None and
                      panel.planner.state == "idle", 120), f"no plan: {panel.planner.error}"
    print(f"plan shown after {time.monotonic() - started:.1f} s")
    settle(app)
    capture(app, window, args.out / f"real-planner-sdxl-{args.size}.png")
    panel.fit_button.click()
    started = time.monotonic()
    assert wait_until(app, lambda: panel.planner.state == "idle" and
                      not panel.fit_result.text().startswith("Fitting"), 180), "no fit"
    print(f"fit shown after {time.monotonic() - started:.1f} s: {panel.fit_result.text()}")
    window.train_tab.settings.ensureWidgetVisible(panel.fit_result)
    settle(app)
    capture(app, window, args.out / f"real-planner-sdxl-fit-{args.size}.png")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
