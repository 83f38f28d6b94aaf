"""What to tell the artist when the worker dies without an `error` event (krita-ai-diffusion's
`parse_common_errors` idea): the end of its stderr and its exit code, mapped to a next step.

The worker's own error events for unexpected exceptions use the same table (`for_exception`),
so the window and the worker give one piece of advice for one failure.
"""

from __future__ import annotations

# (text to look for in stderr, lower-case) -> hint. First match wins, so specific ones first.
PATTERNS = (
    ("out of memory", "The GPU ran out of memory: lower the batch size or the resolution, or "
                      "turn on gradient checkpointing (Train tab, More settings)."),
    ("cuda error", "The GPU driver reported an error: update the NVIDIA driver, or restart the "
                   "computer, then train again."),
    ("no module named 'torch'", "The training packages are not installed: run "
                                "`python3 scripts/bootstrap.py` in the LoRA Studio folder."),
    ("no module named", "A Python package is missing: run `python3 scripts/bootstrap.py` in the "
                        "LoRA Studio folder to reinstall."),
    ("no space left on device", "The disk is full: free some space and train again."),
    ("permission denied", "LoRA Studio may not write to the project folder: check its "
                          "permissions or move the project."),
)

# Signals by number (POSIX: QProcess reports a crash; shells report 128 + signal).
SIGNALS = {9: "was killed (SIGKILL): often the system ran out of memory (RAM). Close other "
              "programs or lower the batch size or resolution.",
           11: "crashed (segmentation fault) inside a library: update the GPU driver, or try "
               "again with mixed precision 'no'.",
           6: "aborted inside a library."}


def _match(text: str) -> str | None:
    text = text.lower()
    return next((advice for needle, advice in PATTERNS if needle in text), None)


def for_exception(exc: BaseException) -> str:
    """The next step for an exception the worker caught and reports in its `error` event."""
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC, whatever the message's language
        return _match("no space left on device") or ""
    return _match(f"{type(exc).__name__}: {exc}") or "See log.txt in the run folder for details."


def hint(stderr_tail: str, exit_code: int | None, crashed: bool) -> str:
    if (advice := _match(stderr_tail)) is not None:
        return advice
    text = stderr_tail.lower()
    signal = exit_code - 128 if exit_code and exit_code > 128 else \
        -exit_code if exit_code and exit_code < 0 else None
    if signal in SIGNALS:
        return "The training process " + SIGNALS[signal]
    if crashed and "killed" in text:
        return "The training process " + SIGNALS[9]
    return ("See the log below and log.txt in the run folder; if it keeps happening, report it "
            "with that log.")
