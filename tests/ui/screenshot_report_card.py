"""Screenshots of the Report card view on a real, evaluated run (by hand, under Xvfb):

    python -m training train DEMO --set save_every_n_steps=15 && python -m training evaluate RUN
    xvfb-run -a -s "-screen 0 1920x1080x24" python tests/ui/screenshot_report_card.py OUT DEMO

Opens the project in the real window, shows the newest run's card at each size (the recommended
file chosen, then an earlier one), the runs list, and "Use this epoch" in the Generate tab.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from PySide6.QtWidgets import QApplication  # noqa: E402

from screenshot_app import capture, settle, wait_until  # noqa: E402
from studio.runs.project import Project  # noqa: E402
from ui import theme  # noqa: E402
from ui.app_settings import SettingsStore  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.worker import WorkerProcess  # noqa: E402

FAKE = ROOT / "tests" / "fake_worker.py"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("project", type=Path)
    parser.add_argument("--sizes", default="1280x800,1920x1080")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LORA_STUDIO_HOME", str(args.out / "home"))
    app = QApplication(sys.argv[:1])
    theme.apply(app)
    # The Generate tab's preview worker is the fake one: only the card is real here.
    window = MainWindow(SettingsStore(), lambda: WorkerProcess([sys.executable, "-u", str(FAKE)]))
    window.move(0, 0)
    assert window.open_project(Project(args.project.resolve()))
    assert wait_until(app, lambda: window.session.report is not None, 60)
    tab = window.train_tab
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        window.resize(w, h)
        window.show()
        window.activateWindow()
        window.tabs.setCurrentWidget(tab)
        tab.lower.setCurrentIndex(1)
        tab.runs.tree.setCurrentItem(tab.runs.tree.topLevelItem(0))
        tab.runs.report_button.click()
        settle(app, 1.0)
        capture(app, window, args.out / f"report-card-{size}.png")
        view = tab.report
        view.table.selectRow(3)
        settle(app, 0.6)
        capture(app, window, args.out / f"report-card-early-{size}.png")
        view.table.selectRow(0)
        settle(app, 0.6)
        capture(app, window, args.out / f"report-card-base-{size}.png")
    view = tab.report
    view.table.selectRow(next(i for i, r in enumerate(view.rows)
                              if r.file == view.card.recommendation.file))
    view.use_button.click()
    settle(app, 1.0)
    capture(app, window, args.out / "report-card-used-in-generate.png")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
