"""The report card being made: one `python -m training evaluate RUN_DIR` worker (ui/worker.py) behind
Qt signals, cancellable, its progress and outcome in words for the Report card view."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from studio import protocol
from studio.protocol import crash_hints
from studio.units import human_duration
from ui.worker import WorkerProcess


class Evaluation(QObject):
    """`started(run_dir)`, `progress(done, total, text)`, `finished(run_dir, ok, message)`:
    ok when report_card.json was written; otherwise the message says why (cancelled, the
    worker's own error and hint, or a crash)."""

    started = Signal(object)
    progress = Signal(int, int, str)
    finished = Signal(object, bool, str)

    def __init__(self, worker_factory: Callable[[], WorkerProcess], parent=None):
        super().__init__(parent)
        self.worker_factory = worker_factory
        self.worker: WorkerProcess | None = None
        self.run_dir: Path | None = None
        self.text = ""
        self.done = self.total = 0
        self.eta_s: float | None = None  # seconds left, as the worker measures them
        self._error: protocol.Error | None = None
        self._result: protocol.Done | None = None

    def is_running(self) -> bool:
        return self.worker is not None and self.worker.is_running()

    def cancelling(self) -> bool:
        return self.is_running() and self.worker.stop_requested

    def start(self, run_dir: Path, quick: bool = False) -> None:
        if self.is_running():
            return
        if self.worker is not None:
            self.worker.deleteLater()
        self.run_dir, self.text, self.done, self.total = Path(run_dir), "Starting…", 0, 0
        self.eta_s = None
        self._error = self._result = None
        self.worker = worker = self.worker_factory()
        worker.setParent(self)
        worker.event_received.connect(self._on_event)
        worker.finished.connect(self._on_finished)
        worker.start_evaluate(self.run_dir, quick)
        self.started.emit(self.run_dir)
        self.progress.emit(0, 0, self.text)

    def cancel(self) -> None:
        """Stop between two images; nothing is written (the worker saves a card only whole)."""
        if self.is_running():
            self.worker.stop()
            self.text = "Cancelling…"
            self.progress.emit(self.done, self.total, self.text)

    def _on_event(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.Status):
            self.text = event.text or self.text
        elif isinstance(event, protocol.Progress):
            self.done, self.total, self.eta_s = event.step, event.total, event.eta_s
        elif isinstance(event, protocol.Error):
            self._error = event
            return
        elif isinstance(event, protocol.Done):
            self._result = event
            return
        else:
            return
        if not self.worker.stop_requested:
            self.progress.emit(self.done, self.total, self.shown_text())

    def shown_text(self) -> str:
        """The worker's status, and the time left once it has measured some work."""
        if self.eta_s is None or not self.done or self.done >= self.total:
            return self.text
        return f"{self.text} · about {human_duration(self.eta_s)} left"

    def _on_finished(self, exit_code: int, crashed: bool) -> None:
        worker, result, error = self.worker, self._result, self._error
        if result is not None and not result.stopped and exit_code == protocol.EXIT_OK:
            ok, message = True, self.text  # the last status: the recommendation's "why"
        elif worker.stop_requested or (result is not None and result.stopped):
            ok, message = False, "The report card was cancelled; nothing was written."
        elif error is not None and not crashed:
            ok, message = False, error.message + (f" {error.hint}" if error.hint else "")
        else:
            ok, message = False, (f"The evaluation process crashed (exit code {exit_code}). "
                                  + crash_hints.hint(worker.stderr_text(), exit_code, crashed))
        self.finished.emit(self.run_dir, ok, message)
