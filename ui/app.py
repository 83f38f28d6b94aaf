"""Start the desktop app: settings, the window (shown first, fast), then the project to open.

Imports only PySide6 and studio (never torch: ≈7 s, machine-notes.md §1); the window appears
before anything slow happens, and the dataset is examined off the GUI thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from studio.runs import demo
from ui import theme
from ui.app_settings import SettingsStore
from ui.main_window import MainWindow


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ui", description="LoRA Studio, the desktop "
                                     "app: train a style LoRA from a folder of your images.")
    parser.add_argument("folder", nargs="?", type=Path,
                        help="a project folder or a folder of images to open")
    parser.add_argument("--demo", action="store_true", help="open the demo project")
    parser.add_argument("--settings", type=Path, help="use this settings file")
    parser.add_argument("--quit-after-start", action="store_true",
                        help="show the window, report the start-up time and quit (for checks)")
    parser.add_argument("--report-loaded", action="store_true",
                        help="print JSON lines as the folder's thumbnails and checks complete, "
                             "then quit (for benchmarks/gui_start.py)")
    return parser


def open_initial(window: MainWindow, args: argparse.Namespace) -> None:
    if args.folder is not None:
        window.open_path(args.folder)
    elif args.demo:
        if demo.assets_present():
            window.open_demo()
        else:
            window.status("The demo assets are not installed yet: run scripts/bootstrap.py demo "
                          "once, or drop a folder of your images here.")
    elif window.store.data.last_project and Path(window.store.data.last_project).is_dir():
        window.open_path(Path(window.store.data.last_project))


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("LoRA Studio")
    app.setOrganizationName("LoRA Studio")
    app.setDesktopFileName("lora-studio")
    theme.apply(app)
    window = MainWindow(SettingsStore(args.settings))
    window.show()
    if args.quit_after_start:
        def report() -> None:
            print(f"window shown after {time.perf_counter() - started:.2f} s "
                  f"(visible={window.isVisible()})", flush=True)
            window.close()
        QTimer.singleShot(0, report)
        return app.exec()
    if args.report_loaded:
        from ui import startup_probe

        startup_probe.watch(window, started)
    # After the first paint: the window is on screen before the project loads.
    QTimer.singleShot(0, lambda: open_initial(window, args))
    return app.exec()
