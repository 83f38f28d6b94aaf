"""WorkerProcess: the training worker (`python -m training train …`, also `evaluate`) behind Qt signals.

QProcess delivers output as signals on the GUI thread, so there are no threads and no polling
(design-anchors.md §3). Stop is cooperative first (a `stop` line, and stdin closing, both make
the worker save and exit 0), then `kill()` after a grace period, because a worker stuck in a
library call never reads stdin again.
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from studio import protocol

ROOT = Path(__file__).resolve().parent.parent
STDERR_TAIL_LINES = 60
DEFAULT_GRACE_MS = 60_000  # a 512 px step on a slow GPU plus the final save fits comfortably


def default_command() -> list[str]:
    """Program and leading arguments that run the worker module (one place, for frozen builds)."""
    # -u: unbuffered, or events arrive in bursts (machine-notes.md §5).
    return [sys.executable, "-u", "-m", "training"]


class WorkerProcess(QObject):
    """One worker run. Signals: `event_received(Event)`, `log_received(str)` (stderr and non-event
    stdout lines), `finished(exit_code, crashed)` once the process is gone."""

    started = Signal()
    event_received = Signal(object)
    log_received = Signal(str)
    finished = Signal(int, bool)

    def __init__(self, command: list[str] | None = None, env: dict[str, str] | None = None,
                 grace_ms: int = DEFAULT_GRACE_MS, parent: QObject | None = None):
        super().__init__(parent)
        self.command = list(command or default_command())
        self.grace_ms = grace_ms
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.stop_requested = False
        self.killed = False
        self._out_buf = b""
        self._err_buf = b""
        self._proc = QProcess(self)
        environment = QProcessEnvironment.systemEnvironment()
        # One torch thread: two are 10-60x slower on 2-core machines (machine-notes.md §3), and
        # the GUI keeps a core. Offline: training never downloads.
        for key, value in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                           "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
                           **(env or {})}.items():
            environment.insert(key, value)
        self._proc.setProcessEnvironment(environment)
        self._proc.setWorkingDirectory(str(ROOT))  # so `-m training` resolves without installing
        self._proc.readyReadStandardOutput.connect(self._read_stdout)
        self._proc.readyReadStandardError.connect(self._read_stderr)
        self._proc.finished.connect(self._on_finished)
        self._proc.errorOccurred.connect(self._on_error)
        self._proc.started.connect(self.started)
        self._kill_timer = QTimer(self, singleShot=True, timeout=self._kill)
        self._failed_to_start = False

    def start_train(self, project: Path, run_dir: Path | None = None,
                    overrides: list[str] = (), resume: Path | None = None) -> None:
        """A new run, or with `resume` the stopped run in that folder continued. The worker
        creates the run folder: `run_dir` if given, else `runs/<start time>` in the project; its
        first status event names it (`details["run_dir"]`)."""
        args = ["train", str(project), "--control-stdin", "--json"]
        if resume is not None:
            args += ["--resume", str(resume)]
        elif run_dir is not None:
            args += ["--run-dir", str(run_dir)]
        for pair in overrides:
            args += ["--set", pair]
        self.start(args)

    def start_evaluate(self, run_dir: Path, quick: bool = False) -> None:
        """The report card of a finished run (`python -m training evaluate`, `--quick` on the
        training samples): status, progress and done events like a run, stopped the same way
        (`stop`, or stdin closing)."""
        self.start(["evaluate", str(run_dir), "--control-stdin", "--json",
                    *(["--quick"] if quick else [])])

    def start_plan_memory(self, project: Path, config_file: Path | None, gpu_gb: float,
                          fit: bool) -> None:
        """The memory planner (`python -m training plan-memory --json`): one JSON line with the
        plan, whether it fits a `gpu_gb` card and, with `fit`, the fastest settings that do
        (studio.machine.memory_fit.fit). It reads no stdin; `abort` ends it."""
        args = ["plan-memory", str(project), "--json", "--gpu-gb", f"{gpu_gb:g}"]
        if config_file is not None:
            args += ["--config", str(config_file)]
        self.start(args + ([] if fit else ["--no-fit"]))

    def abort(self) -> None:
        """End the worker now, without a stop request: for work that saves nothing (a plan)."""
        self.killed = True
        if self.is_running():
            self._proc.kill()

    def start_serve(self, project: Path) -> None:
        """The generation worker (`python -m training serve`): commands go in with `send`."""
        self.start(["serve", "--project", str(project)])

    def start(self, args: list[str]) -> None:
        program, *prefix = self.command
        self._proc.start(program, [*prefix, *args])

    def is_running(self) -> bool:
        return self._proc.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int:
        return int(self._proc.processId())

    def send(self, request: protocol.Request) -> None:
        """One command line to the worker (written once the process has started)."""
        if self.is_running() and not self.stop_requested:
            self._proc.write((request.to_json() + "\n").encode())

    def stop(self, requests: tuple[protocol.Request, ...] = (protocol.StopRequest(),)) -> None:
        """Ask the worker to stop after its current step and save; kill it if it hasn't exited
        after `grace_ms`. The generation worker is asked with cancel and quit."""
        if not self.is_running() or self.stop_requested:
            return
        self.stop_requested = True
        for request in requests:
            self._proc.write((request.to_json() + "\n").encode())
        # Closing stdin is the worker's other stop signal, and the only one a worker that has
        # not started its stdin reader yet (still importing) will see.
        self._proc.closeWriteChannel()
        self._kill_timer.start(self.grace_ms)

    def wait(self, ms: int) -> bool:
        """Block until the process has exited (only for app shutdown and tests)."""
        return self._proc.waitForFinished(ms)

    def _kill(self) -> None:
        if self.is_running():
            self.killed = True
            self.log_received.emit(f"The worker did not stop within {self.grace_ms / 1000:g} s; "
                                   f"killing it.")
            self._proc.kill()

    def _read_stdout(self) -> None:
        self._out_buf += bytes(self._proc.readAllStandardOutput())
        # Keep a partial last line for the next read: a JSON line may arrive in pieces.
        *lines, self._out_buf = self._out_buf.split(b"\n")
        for raw in lines:
            self._handle_stdout_line(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def _handle_stdout_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = protocol.parse_event(line)
        except protocol.ProtocolError as exc:
            # An event that does not fit its dataclass (a worker of another version, or a
            # bug): say so rather than guess defaults for what is missing.
            self.log_received.emit(f"Protocol error: {exc}: {line}")
            return
        if event is None:
            self.log_received.emit(line)  # a stray print must never break the GUI
        else:
            self.event_received.emit(event)

    def _read_stderr(self) -> None:
        self._err_buf += bytes(self._proc.readAllStandardError())
        *lines, self._err_buf = self._err_buf.split(b"\n")
        for raw in lines:
            self._handle_stderr_line(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def _handle_stderr_line(self, line: str) -> None:
        self.stderr_tail.append(line)
        self.log_received.emit(line)

    def _flush(self) -> None:
        self._read_stdout()
        self._read_stderr()
        if self._out_buf:
            self._handle_stdout_line(self._out_buf.decode("utf-8", errors="replace"))
        if self._err_buf:
            self._handle_stderr_line(self._err_buf.decode("utf-8", errors="replace"))
        self._out_buf = self._err_buf = b""

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._flush()
        crashed = status == QProcess.ExitStatus.CrashExit and not self.killed
        self.finished.emit(exit_code if not self.killed else -9, crashed or self.killed)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._failed_to_start = True
            self.stderr_tail.append(f"Could not start {self.command[0]}: "
                                    f"{self._proc.errorString()}")
            self.finished.emit(-1, True)

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_tail)
