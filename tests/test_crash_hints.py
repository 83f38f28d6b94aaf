"""One advice table for failures: the worker's error events and the window's crash hints agree."""

from __future__ import annotations

import errno

from studio.protocol import crash_hints


def test_the_worker_and_the_window_give_one_advice_for_one_failure():
    import training.__main__ as worker

    assert not hasattr(worker, "hint_for")  # the worker's own copy of the table is gone
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert crash_hints.for_exception(oom) == crash_hints.hint(str(oom), 1, False)
    assert "gradient checkpointing (Train tab, More settings)" in crash_hints.for_exception(oom)
    full = OSError(errno.ENOSPC, "Plus d'espace disponible sur le périphérique")  # any language
    assert crash_hints.for_exception(full).startswith("The disk is full")
    denied = PermissionError(errno.EACCES, "Permission denied", "runs/x/loras")
    assert "permissions" in crash_hints.for_exception(denied)
    assert crash_hints.for_exception(ValueError("odd")) == \
        "See log.txt in the run folder for details."
