"""Screenshots of every view that shows images, with the demo's 64 px pictures (issue 14): the
dataset preview, the training samples strip, the Generate tab's image view, with / without (side
by side, split and blink), the grid on screen and its saved PNG. Run by hand under Xvfb:

    xvfb-run -a -s "-screen 0 1280x800x24" python tests/ui/screenshot_previews.py OUT

Training runs against tests/fake_worker.py (3 epochs, a LoRA file each); the pictures shown in
the sample strip, image view, with / without and grid are images of assets/demo-style, put in
the views directly (no generation model is run), so the shots show how 64 px images look there.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from PIL import Image  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from screenshot_app import capture, settle, wait_until  # noqa: E402
from studio import grid  # noqa: E402
from studio.runs import demo
from ui import theme  # noqa: E402
from ui.app_settings import SettingsStore  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.worker import WorkerProcess  # noqa: E402

FAKE = ROOT / "tests" / "fake_worker.py"


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    style = work / "demo-style"
    shutil.copytree(demo.DEMO_STYLE, style)
    pictures = sorted(style.glob("*.png"))
    app = QApplication(sys.argv[:1])
    theme.apply(app)
    env = {"FAKE_WORKER_STEPS": "12", "FAKE_WORKER_DELAY": "0.01", "FAKE_SERVE_DELAY": "0.002"}
    window = MainWindow(SettingsStore(),
                        lambda: WorkerProcess([sys.executable, "-u", str(FAKE)], env=env))
    window.move(0, 0)
    window.resize(1280, 800)
    window.show()
    window.store.data.recent_models = [str(demo.POCKET_MODEL)]
    assert window.open_path(style)
    assert wait_until(app, lambda: window.session.report is not None
                      and window.dataset_tab.loader.pending() == 0)
    window.tabs.setCurrentIndex(0)
    window.dataset_tab.select_image(pictures[22])
    wait_until(app, lambda: window.dataset_tab.loader.pending() == 0, 10)
    capture(app, window, out / "dataset-preview.png")

    window.tabs.setCurrentIndex(1)
    settle(app)
    capture(app, window, out / "train-settings-pocket.png")
    tab = window.train_tab
    tab.start_training()
    assert wait_until(app, lambda: not tab.is_running(), 30), "the run did not finish"
    shown = [pictures[i] for i in (3, 14, 22, 45)]
    tab.panel.samples.show_samples(12, 3, [str(p) for p in shown],
                                   [(p.with_suffix(".txt")).read_text() for p in shown])
    wait_until(app, lambda: tab.panel.samples.loader.pending() == 0, 10)
    capture(app, window, out / "samples-strip.png")

    window.tabs.setCurrentIndex(2)
    gen = window.generate_tab
    gen.history.add(pictures[14])
    gen.views.setCurrentWidget(gen.result)
    gen.result.show_image(pictures[14])
    capture(app, window, out / "image-view.png")

    gen.views.setCurrentWidget(gen.compare)
    gen.compare.begin("zxqstyle-demo 1", 7)
    gen.compare.show_side("with", pictures[45], 7)
    gen.compare.show_side("without", pictures[58], 7)
    capture(app, window, out / "compare-side-by-side.png")
    gen.compare.set_mode("split")
    gen.compare.overlay.split = 0.5
    capture(app, window, out / "compare-split.png")
    gen.compare.set_mode("blink")
    capture(app, window, out / "compare-blink.png")
    gen.compare.set_mode("side")

    gen.views.setCurrentWidget(gen.grid)
    run = gen.grid.selected()
    rows = [f.label for f in run.checkpoints_oldest_first()]
    strengths = grid.DEFAULT_STRENGTHS
    cols = [f"strength {s:g}" for s in strengths]
    cells = [[Image.open(pictures[(7 * r + c) % len(pictures)]).convert("RGB")
              for c in range(len(strengths))] for r in range(len(rows))]
    saved = out / "grid-saved.png"
    grid.compose(cells, rows, cols, "zxqstyle, a yellow star on a red background · seed 7"
                 ).save(saved)
    gen.grid.show_grid(saved, rows, cols, (64, 64))
    capture(app, window, out / "grid-on-screen.png")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
