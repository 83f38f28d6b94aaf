"""`python -m ui FOLDER --report-loaded` (for benchmarks/gui_start.py): print one JSON line per
milestone of opening a dataset, then quit.

    {"event": "window_shown", "s": …}        the window is on screen
    {"event": "project_open", "s": …}        the folder is open, the grid lists its images
    {"event": "thumbnails_visible", "s": …, "visible": n, "images": N}
                                              every thumbnail in view is decoded and shown
    {"event": "dataset_examined", "s": …}     the dataset doctor's report is in (badges, summary)
    {"event": "thumbnails_all", "s": …}       all N thumbnails decoded (as if scrolled through)

Times are seconds since `ui.app.main()` started (the benchmark adds process start and imports).
Polls every 10 ms on the GUI thread: only for measuring, never in normal use.
"""

from __future__ import annotations

import json
import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from ui.dataset_model import THUMB_PX

POLL_MS = 10
TIMEOUT_S = 600


def _emit(event: str, started: float, **fields) -> None:
    print(json.dumps({"event": event, "s": round(time.perf_counter() - started, 3), **fields}),
          flush=True)


def watch(window, started: float) -> None:
    """Report the milestones of `window` opening its project; quit after the last."""
    tab = window.dataset_tab
    seen: set[str] = set()
    state = {"requested_all": False}
    timer = QTimer(window)

    def once(event: str, **fields) -> None:
        if event not in seen:
            seen.add(event)
            _emit(event, started, **fields)

    def visible_rows() -> list:
        grid, proxy = tab.grid, tab.proxy
        area = grid.viewport().rect()
        return [proxy.index(row, 0) for row in range(proxy.rowCount())
                if grid.visualRect(proxy.index(row, 0)).intersects(area)]

    def poll() -> None:
        if time.perf_counter() - started > TIMEOUT_S:
            once("timeout")
            QApplication.quit()
            return
        if window.session.project is None or not tab.model.images:
            return
        once("project_open", images=len(tab.model.images))
        rows = visible_rows()
        if rows and all(index.data(Qt.ItemDataRole.DecorationRole) is not None
                        for index in rows):
            once("thumbnails_visible", visible=len(rows), images=len(tab.model.images))
        if window.session.report is not None:
            once("dataset_examined")
        if "thumbnails_visible" in seen and not state["requested_all"]:
            state["requested_all"] = True
            for path in tab.model.images:
                tab.loader.get(path, THUMB_PX)
        if state["requested_all"] and tab.loader.pending() == 0:
            once("thumbnails_all", images=len(tab.model.images))
        if {"thumbnails_all", "dataset_examined"} <= seen:
            timer.stop()
            window.close()

    QTimer.singleShot(0, lambda: once("window_shown", visible=window.isVisible()))
    timer.timeout.connect(poll)
    timer.start(POLL_MS)
