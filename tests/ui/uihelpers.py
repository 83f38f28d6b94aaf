"""Helpers for the GUI tests (imported by name: tests/ui is on sys.path under pytest)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE_WORKER = ROOT / "tests" / "fake_worker.py"


def digests(folder: Path) -> dict[str, str]:
    """Each image file's content hash (captions excluded): the artist's images never change."""
    from studio.dataset import IMAGE_EXTENSIONS

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.suffix.lower() in IMAGE_EXTENSIONS}


class FakeWorkerFactory:
    """Makes WorkerProcesses that run tests/fake_worker.py; set `mode`, `steps`, `delay`,
    `grace_ms` before starting. `record` receives every line the GUI wrote to the worker."""

    def __init__(self, record: Path):
        self.record = record
        self.mode, self.steps, self.delay, self.grace_ms = "ok", 20, 0.01, 3000
        self.created = []

    def __call__(self):
        from ui.worker import WorkerProcess

        worker = WorkerProcess(
            [sys.executable, "-u", str(FAKE_WORKER)], grace_ms=self.grace_ms,
            env={"FAKE_WORKER_MODE": self.mode, "FAKE_WORKER_STEPS": str(self.steps),
                 "FAKE_WORKER_DELAY": str(self.delay), "FAKE_WORKER_RECORD": str(self.record)})
        self.created.append(worker)
        return worker

    def commands(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []


def open_and_wait(qtbot, window, folder: Path, model: Path | None = None):
    """Open a folder of images in the window and wait until the dataset has been examined."""
    assert window.open_path(folder)
    if model is not None:
        window.session.update(base_model=str(model))
        window.train_tab.settings.model.set_value(str(model), window.session.project.root)
        window.train_tab.settings._validate(window.session.config, [])
    qtbot.waitUntil(lambda: window.session.report is not None, timeout=20000)
    return window.session.project
