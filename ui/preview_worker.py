"""PreviewWorker: the Generate tab's long-lived `python -m training serve` process.

Started lazily on the first job with the project's base model (`load`, then `ready`); jobs
(`generate`, `grid`, `merge`) go to it one at a time, each sent only when the previous one is
done, so a `cancel` can never hit the next job of a with/without pair. Stopped (cancel + quit +
stdin closed, killed after a grace period) before training starts: one GPU worker at a time
(design-anchors.md §3); the next job starts it again.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from studio import protocol
from studio.protocol import crash_hints
from ui.worker import WorkerProcess

STOP_GRACE_MS = 10_000  # cancel takes effect between denoising steps; loading can take longer
_ids = itertools.count(1)


@dataclass
class Job:
    """One request for the worker and what the tab does with its events."""
    request: protocol.Request  # GenerateRequest | GridRequest | MergeRequest (its id set here)
    label: str = ""  # what the progress bar says it is doing
    units: int = 1  # progress units: images × steps
    role: str = ""  # what the tab does with the result ("image", "with", "without", "grid", …)
    id: str = field(default_factory=lambda: f"job{next(_ids)}")
    images: list = field(default_factory=list)  # ImageReady events received
    labels: tuple = ()  # a grid's (row labels, column labels, cell size), for showing it

    def __post_init__(self) -> None:
        if hasattr(self.request, "id"):  # the job's events carry its id
            self.request = dataclasses.replace(self.request, id=self.id)

    @property
    def kind(self) -> str:
        """The command sent: "generate", "grid" or "merge"."""
        return self.request.cmd


class PreviewWorker(QObject):
    state_changed = Signal(str)  # stopped | loading | ready | busy | stopping
    progress = Signal(object, object)  # Job, GenProgress
    image_ready = Signal(object, object)  # Job, ImageReady
    job_done = Signal(object, object)  # Job, GenDone
    job_failed = Signal(object, str, str)  # Job, message, hint
    idle = Signal()  # nothing running or queued
    stopped = Signal()  # the process has exited
    log = Signal(str)

    def __init__(self, factory: Callable[[], WorkerProcess] = WorkerProcess,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.factory = factory
        self.worker: WorkerProcess | None = None
        self.project: Path | None = None
        self.base_model = ""
        self.loaded_base = ""  # what the running worker has loaded ("" = nothing yet)
        self.queue: deque[Job] = deque()
        self.current: Job | None = None
        self.state = "stopped"
        self.loads = 0  # `load` commands sent (tests count base-model loads)
        self.load_request: protocol.LoadRequest | None = None  # the last one sent

    # --- what the tab calls ----------------------------------------------------------------
    def configure(self, project: Path | None, base_model: str) -> None:
        """Project and base model for the next job; a new project restarts the process."""
        if project != self.project and self.is_running():
            self.stop()
        self.project, self.base_model = project, base_model

    def submit(self, jobs: list[Job]) -> None:
        self.queue.extend(jobs)
        self._pump()

    def busy(self) -> bool:
        """A job is running or waiting (maybe for the base model to load)."""
        return self.current is not None or bool(self.queue)

    def is_running(self) -> bool:
        return self.worker is not None and self.worker.is_running()

    def cancel(self) -> None:
        """Drop queued jobs and interrupt the current one (between denoising steps)."""
        had_queue = bool(self.queue)
        self.queue.clear()
        if self.current is not None and self.is_running():
            self.worker.send(protocol.CancelRequest())
        elif had_queue:  # waiting for the base model: the load goes on, the jobs are dropped
            self.idle.emit()

    def stop(self) -> bool:
        """End the process (the GPU memory is freed when it exits); True when already gone.
        `stopped` fires once it has exited."""
        self.queue.clear()
        if not self.is_running():
            return True
        if self.state != "stopping":
            self._set_state("stopping")
            self.worker.stop((protocol.CancelRequest(), protocol.QuitRequest()))
        return False

    def shutdown(self, wait_ms: int = 3000) -> None:
        """At app exit: stop, wait a little, then kill."""
        if self.stop() or self.worker is None:
            return
        if not self.worker.wait(wait_ms) and self.worker.is_running():
            self.worker._proc.kill()
            self.worker.wait(2000)

    # --- internals -------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    def _start(self) -> None:
        worker = self.worker = self.factory()
        worker.setParent(self)
        worker.grace_ms = STOP_GRACE_MS
        worker.event_received.connect(lambda e, w=worker: self._on_event(w, e))
        worker.log_received.connect(self.log)
        worker.finished.connect(lambda code, crashed, w=worker: self._on_finished(w, code,
                                                                                 crashed))
        self.loaded_base = ""
        worker.start_serve(self.project)

    def _pump(self) -> None:
        """Send the next job when the worker is free, loading the base model first if needed."""
        if self.current is not None or not self.queue or self.state in ("loading", "stopping"):
            return
        if self.project is None or not self.base_model:
            job = self.queue.popleft()
            self.queue.clear()
            self.job_failed.emit(job, "No base model is chosen.",
                                 "Choose the base model on the Train tab first.")
            self.idle.emit()
            return
        if not self.is_running():
            self._start()
        if self.loaded_base != self.base_model:
            self._set_state("loading")
            self.loads += 1
            self.load_request = protocol.LoadRequest(base_model=self.base_model,
                                                     project=str(self.project))
            self.worker.send(self.load_request)
            return
        job = self.current = self.queue.popleft()
        self._set_state("busy")
        self.worker.send(job.request)

    def _on_event(self, worker: WorkerProcess, event) -> None:
        if worker is not self.worker:
            return
        job = self.current
        if isinstance(event, protocol.Ready):
            self.loaded_base = event.base_model
            if self.state == "loading":
                self._set_state("ready")
                self._pump()
        elif isinstance(event, protocol.Error):
            if self.state == "loading":  # the load failed: the jobs waiting for it too
                self._settle()
                self._fail(self.queue[0] if self.queue else Job(self.load_request),
                           event.message, event.hint)
            elif job is not None and event.id == job.id:
                self._settle()
                self._fail(job, event.message, event.hint)
            else:  # another request's, or a line the worker refused: the job goes on
                self.log.emit(f"ERROR: {event.message}")
        elif job is None or getattr(event, "id", job.id) != job.id:
            return  # hello, status, or a late event of a job that is over
        elif isinstance(event, protocol.GenProgress):
            self.progress.emit(job, event)
        elif isinstance(event, protocol.ImageReady):
            job.images.append(event)
            self.image_ready.emit(job, event)
        elif isinstance(event, protocol.GenDone):
            self.current = None
            if event.cancelled:
                self.queue.clear()
            self._settle()
            self.job_done.emit(job, event)
            self._pump()
            if self.current is None and not self.queue and self.state == "ready":
                self.idle.emit()

    def _settle(self) -> None:
        if self.state != "stopping":
            self._set_state("ready")

    def _fail(self, job: Job, message: str, hint: str) -> None:
        self.current = None
        self.queue.clear()
        self.job_failed.emit(job, message, hint)
        self.idle.emit()

    def _on_finished(self, worker: WorkerProcess, code: int, crashed: bool) -> None:
        if worker is not self.worker:
            return
        requested = worker.stop_requested
        self.worker, self.loaded_base = None, ""
        worker.deleteLater()
        job = self.current or (self.queue[0] if self.queue and self.state == "loading" else None)
        self._set_state("stopped")
        if job is not None:
            if requested:
                self._fail(job, "Stopped.", "")
            else:
                tail = worker.stderr_text()
                hint = crash_hints.hint(tail, code, crashed).replace("training process",
                                                                     "preview process")
                self._fail(job, f"The preview process stopped unexpectedly (exit code {code}).",
                           hint + "\n\n" + "\n".join(tail.strip().splitlines()[-6:]))
        self.stopped.emit()
