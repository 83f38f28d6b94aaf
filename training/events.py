"""The worker's side of the protocol: events on a reserved stdout, and stop requests (stdin, signals)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO

from studio import protocol
from studio.protocol import Event, Progress

PROGRESS_INTERVAL_S = 0.25  # at most 4 progress events a second (the GUI repaints on each)


class EventSink:
    """Writes events as JSON lines to the real stdout (and events.jsonl); keeps stdout clean.

    At start the original stdout file descriptor is duplicated for events and fd 1 is pointed at
    stderr, so a stray print or a library writing to stdout lands in the log instead of breaking
    the GUI's JSON parser (design-anchors.md §3).
    """

    def __init__(self, stdout_events: bool = True, enabled: bool = True,
                 claim_stdout: bool = True):
        """`stdout_events` False: a person at a terminal gets only the readable progress on
        stderr (events still go to events.jsonl). `enabled` False: a non-main accelerate rank
        (whose stdout is still claimed: all ranks share the launcher's stdout). `claim_stdout`
        False: in-process use (tests), where fd 1 is not ours to redirect."""
        self.enabled = enabled
        self._out: IO[str] | None = None
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self._last_progress = 0.0
        self._bar = enabled and sys.stderr.isatty()
        if not claim_stdout:
            return
        sys.stdout.flush()
        if enabled and stdout_events:
            self._out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def attach_file(self, path: Path) -> None:
        """Also append every event to the run's events.jsonl (main process only)."""
        if self.enabled:
            self._file = open(path, "a", encoding="utf-8", buffering=1)

    def emit(self, event: Event) -> None:
        if not self.enabled:
            return
        line = event.to_json()
        with self._lock:
            for out in (self._out, self._file):
                if out is not None:
                    try:
                        out.write(line + "\n")
                        out.flush()
                    except (BrokenPipeError, ValueError, OSError):
                        pass  # the GUI went away; keep training and writing files
        if self._bar and not isinstance(event, Progress):
            sys.stderr.write(_human(event) + "\n")

    def progress_due(self) -> bool:
        """Whether a progress event would be sent now (reading the loss costs a device sync)."""
        return time.monotonic() - self._last_progress >= PROGRESS_INTERVAL_S

    def progress(self, event: Progress, force: bool = False) -> None:
        """Throttled progress; `force` for the last step so the GUI always sees 100 %."""
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self.emit(event)
        if self._bar:
            sys.stderr.write("\r" + _bar(event) + ("\n" if event.step >= event.total else ""))
            sys.stderr.flush()

    def close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _bar(p: Progress, width: int = 30) -> str:
    done = int(width * p.step / max(p.total, 1))
    eta = "" if p.eta_s is None else f" ETA {int(p.eta_s // 60)}:{int(p.eta_s % 60):02d}"
    return (f"[{'#' * done}{'.' * (width - done)}] step {p.step}/{p.total} epoch {p.epoch} "
            f"loss {p.loss:.4f} lr {p.lr:.2e}{eta}")


def _human(event: Event) -> str:
    if isinstance(event, protocol.Error):
        return f"ERROR: {event.message}" + (f"\n  hint: {event.hint}" if event.hint else "")
    if isinstance(event, protocol.Status):
        return f"[{event.phase}] {event.text}"
    if isinstance(event, protocol.Done):
        return ("Stopped early; saved " if event.stopped else "Done: ") + event.path
    if isinstance(event, protocol.Hello):
        return f"LoRA Studio worker started (pid {event.pid})"
    if isinstance(event, protocol.WarningEvent):
        return f"WARNING: {event.message}" + (f"\n  hint: {event.hint}" if event.hint else "")
    if isinstance(event, protocol.Validation):
        return f"Validation loss after epoch {event.epoch}: {event.loss:.4f}"
    if isinstance(event, protocol.Sample):
        return f"Samples at step {event.step}: {', '.join(event.paths)}"
    if isinstance(event, protocol.LoraSaved):
        return f"LoRA file at step {event.step}: {event.path}"
    return event.to_json()


class Control:
    """Whether the run should stop at the next step.

    With `stdin_control` (the GUI starts the worker with --control-stdin) a `stop` command, or
    stdin closing because the GUI went away, requests a stop. Without it stdin is never read:
    a CLI run under nohup or in CI has no stdin and must not stop on EOF. In both modes SIGINT
    and SIGTERM request a graceful stop; a second SIGINT stops at once.
    """

    def __init__(self, stdin_control: bool = False, signals: bool = True):
        self._stop = threading.Event()
        self._requests: set[str] = set()
        self.reason = ""
        if stdin_control:
            threading.Thread(target=self._read_stdin, name="stdin-control", daemon=True).start()
        if signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.reason = reason
            self._stop.set()

    def take(self, request: str) -> bool:
        """Whether `request` (sample_now, save_now) was asked for since the last call."""
        if request in self._requests:
            self._requests.discard(request)
            return True
        return False

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self._stop.is_set():
            raise KeyboardInterrupt  # the user pressed Ctrl-C twice: stop without saving
        self.request_stop(signal.Signals(signum).name)
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving "
              f"(Ctrl-C again to abort without saving)", file=sys.stderr)

    def _read_stdin(self) -> None:
        for line in sys.stdin:
            cmd = protocol.parse_command(line)
            if cmd and cmd["cmd"] == "stop":
                self.request_stop("stop command")
                return
            if cmd and cmd["cmd"] in ("sample_now", "save_now"):
                self._requests.add(cmd["cmd"])
        self.request_stop("stdin closed")  # the GUI that started us is gone
