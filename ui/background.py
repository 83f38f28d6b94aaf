"""Run a pure-Python function on the thread pool and get its result back on the GUI thread.

The function must not touch widgets or QPixmaps (not thread-safe); its result arrives through a
queued signal, so `on_done` runs on the GUI thread where widgets may be updated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

_pending: set[_Carrier] = set()  # keeps carriers alive until their result is delivered


class _Carrier(QObject):
    """Lives on the GUI thread. Its signals are connected to its own slots, so a signal emitted
    on a pool thread is queued to the GUI thread (a lambda connection could run on the emitter's
    thread)."""

    done = Signal(object)
    failed = Signal(object)

    def __init__(self, on_done, on_error):
        super().__init__()
        self.on_done, self.on_error = on_done, on_error
        self.done.connect(self._deliver_done)
        self.failed.connect(self._deliver_error)

    @Slot(object)
    def _deliver_done(self, value) -> None:
        self._finish(self.on_done, value)

    @Slot(object)
    def _deliver_error(self, exc) -> None:
        self._finish(self.on_error, exc)

    def _finish(self, handler, value) -> None:
        _pending.discard(self)
        self.deleteLater()
        if handler is not None:
            handler(value)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], carrier: _Carrier):
        super().__init__()
        self.fn, self.carrier = fn, carrier

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # noqa: BLE001 - reported to the GUI, never lost in a thread
            self._deliver(self.carrier.failed, exc)
        else:
            self._deliver(self.carrier.done, result)

    @staticmethod
    def _deliver(signal, value) -> None:
        try:
            signal.emit(value)
        except RuntimeError:
            pass  # the app is shutting down and took the carrier with it: no one to tell


def pool() -> QThreadPool:
    return QThreadPool.globalInstance()


def run_in_background(fn: Callable[[], Any], on_done: Callable[[Any], None],
                      on_error: Callable[[Exception], None] | None = None) -> None:
    carrier = _Carrier(on_done, on_error)  # created on (and owned by) the GUI thread
    _pending.add(carrier)
    pool().start(_Task(fn, carrier))
