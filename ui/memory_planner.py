"""MemoryPlanner: the GPU memory planner (`python -m training plan-memory`) run in the background
for the Train tab, debounced and restarted as the settings change, with plans already predicted
read from the project's cache (studio.machine.memory_fit.cached, no torch) so reopening is instant."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from studio import atomic, config
from studio.machine import memory_fit
from studio.machine.memory_fit import MemorySettings, Plan
from ui.worker import WorkerProcess

DEBOUNCE_MS = 800  # a rank slider drag or typing a number settles before a plan starts
# Seconds `plan-memory` takes for a first plan, start-up included, on a quiet 2-core machine
# (docs/benchmarks.md, "How long a plan takes": 10.2 s for SDXL, 5.6 s for SD1.5); replaced by
# what this session saw. A fit takes up to twice that (SDXL for an 8 GB card: 19.2 s).
TYPICAL_SECONDS = {"sdxl": 10.0}
DEFAULT_SECONDS = 6.0
FIT_FACTOR = 2.0
REQUEST_FILE = "planner-request.toml"  # the form's settings, not yet saved to project.toml


def precisions(cfg) -> list[str]:
    """The compute precisions the worker may plan "auto" with (bf16 on most cards, fp16 on
    those without bf16: training/train.py mixed_precision); the window cannot ask torch."""
    mixed = cfg.mixed_precision.value
    return ["bf16", "fp16"] if mixed == "auto" else [{"no": "fp32"}.get(mixed, mixed)]


class MemoryPlanner(QObject):
    """`state` is "idle", "waiting" (debounce), "predicting" or "fitting"; `plan` the plan of
    the current settings (None: not known yet); `reason` why none can be made; `error` what the
    worker said when it failed. `changed` fires on every change; `fitted(dict)` with the
    worker's fit ({"ok", "changes", "set", "needed_bytes", "plan"}) after `fit`."""

    changed = Signal()
    fitted = Signal(dict)

    def __init__(self, worker_factory: Callable[[], WorkerProcess] = WorkerProcess,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.worker_factory = worker_factory
        self.state, self.plan, self.reason, self.error = "idle", None, "", ""
        self.settings: MemorySettings | None = None
        self.worker: WorkerProcess | None = None
        self.started_runs = 0  # workers started (tests: a cached plan starts none)
        self._project, self._cfg, self._family = None, None, ""
        self._lines: list[str] = []
        self._started_at = 0.0
        self._seconds: dict[str, float] = {}  # measured seconds per model family
        self._timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS, timeout=self._start)
        self._paused = False
        self._items: list | None = None

    def eta_s(self) -> float:
        return self._seconds.get(self._family, TYPICAL_SECONDS.get(self._family,
                                                                   DEFAULT_SECONDS))

    def request(self, project, cfg, items: list | None, family: str) -> None:
        """The settings changed: show the cached plan for them, or predict it after a pause.
        `items` are the dataset's training Items (None while it is being examined)."""
        self._project, self._cfg, self._family, self._items = project, cfg, family, items
        reason, wanted = "", []
        if project is None:
            reason = "open a project"
        elif items is None:
            reason = "checking the dataset…"
        else:
            try:
                wanted = [memory_fit.project_settings(cfg, project.root, items, p)
                          for p in precisions(cfg)]
            except (FileNotFoundError, ValueError):
                reason = "choose a base model"
        if not wanted:
            self._cancel()
            self.settings, self.plan, self.reason, self.error = None, None, reason, ""
            self.changed.emit()
            return
        if wanted[0] == self.settings and (self.plan is not None or self.state != "idle"
                                           or self.error):
            return  # nothing the planner counts has changed (e.g. the learning rate)
        self.settings, self.reason, self.error = wanted[0], "", ""
        self._cancel()  # a plan or fit under way is for settings that are gone
        self.plan = memory_fit.cached(project.cache, wanted)
        self.state = "idle" if self.plan is not None or self._paused else "waiting"
        if self.state == "waiting":
            self._timer.start()
        elif self.plan is None:
            self.reason = "predicted once this run ends"
        self.changed.emit()

    def set_paused(self, paused: bool) -> None:
        """While a run or report card works, predict nothing new (cached plans still show): the
        planner's CPU time would slow the run down. Resumes with the settings of the moment."""
        if paused == self._paused:
            return
        self._paused = paused
        if paused:
            if self.state != "idle":
                self.settings = None  # not predicted: ask again on resume
            self.cancel()
        elif self._project is not None:
            self.settings = None
            self.request(self._project, self._cfg, self._items, self._family)

    def fit(self, gpu_bytes: int) -> None:
        """The fastest settings that fit a `gpu_bytes` card (`fitted` tells them); the plan of
        the current settings comes with it."""
        if self._project is None or self.settings is None:
            return
        self._cancel()
        self._run(gpu_bytes, fit=True)

    def cancel(self) -> None:
        self._cancel()
        if self.state != "idle":
            self.state = "idle"
            self.changed.emit()

    def _cancel(self) -> None:
        self._timer.stop()
        if self.worker is not None:
            worker, self.worker = self.worker, None
            worker.finished.disconnect()
            worker.abort()
            worker.deleteLater()

    def _start(self) -> None:
        self._run(0, fit=False)

    def _run(self, gpu_bytes: int, fit: bool) -> None:
        project = self._project
        request = project.cache / "memory" / REQUEST_FILE
        try:  # the form's settings as they are now (project.toml is saved a moment later)
            request.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(request, config.to_toml(self._cfg))
        except OSError as exc:
            self.state, self.error = "idle", f"could not write {request}: {exc}"
            self.changed.emit()
            return
        self.state = "fitting" if fit else "predicting"
        self._lines, self._started_at = [], time.monotonic()
        self.worker = worker = self.worker_factory()
        worker.setParent(self)
        worker.log_received.connect(self._lines.append)
        worker.finished.connect(lambda code, crashed, w=worker, f=fit: self._done(w, code, f))
        self.started_runs += 1
        # --gpu-gb even for the plan alone: without it the worker would size this machine's
        # GPU and run the fit search, minutes for SDXL.
        worker.start_plan_memory(project.root, request, max(gpu_bytes, 1) / 2**30, fit)
        self.changed.emit()

    def _done(self, worker: WorkerProcess, code: int, fit: bool) -> None:
        if worker is not self.worker:
            return  # cancelled meanwhile
        self.worker = None
        worker.deleteLater()
        result = None
        for line in reversed(self._lines):
            if line.startswith("{"):
                try:
                    result = json.loads(line)
                    break
                except ValueError:
                    continue
        self.state = "idle"
        if code != 0 or not isinstance(result, dict) or "plan" not in result:
            said = [line for line in worker.stderr_text().splitlines() if line.strip()]
            self.error = said[-1] if said else f"the planner stopped (exit code {code})"
            self.changed.emit()
            return
        if not fit:
            self._seconds[self._family] = time.monotonic() - self._started_at
        self.plan = Plan.from_json(result["plan"])
        self.error = ""
        self.changed.emit()
        if fit and result.get("fit"):
            self.fitted.emit(result["fit"])

    def request_file(self) -> Path | None:
        return self._project.cache / "memory" / REQUEST_FILE if self._project else None
