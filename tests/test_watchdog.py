"""The step watchdog: a several-fold slowdown is reported, as memory spilling (with the setting to
change) only when the GPU's memory is full; the memory reading works without /proc (Windows)."""

from __future__ import annotations

import builtins
import sys

import pytest

from conftest import make_project
from test_multi_gpu import run_worker
from training import watchdog
from training.watchdog import MemoryReading, StepWatchdog

GB = 2**30
LEVER = "Turn on gradient checkpointing."


def run(reading: MemoryReading | None, slow: float = 1.0):
    """30 normal steps of 0.25 s, then steps of `slow` seconds; the first warning, if any."""
    dog = StepWatchdog(enabled=True, lever=LEVER, memory=lambda: reading)
    for seconds in [0.25] * 30 + [slow] * 20:
        if warning := dog.observe(seconds):
            return warning
    return None


def test_spill_like_slowdown_names_the_setting_to_change():
    full = MemoryReading(reserved=int(7.6 * GB), free=int(0.1 * GB), total=8 * GB)
    warning = run(full, slow=3.0)
    assert warning is not None
    assert "slowed down from 0.25 s" in warning.message and "spilling" in warning.message
    assert "7.9 GB of 8.0 GB" in warning.message
    assert warning.hint.startswith(LEVER) and "Sysmem Fallback" in warning.hint


def test_windows_fallback_holding_more_than_the_card_counts_as_full():
    # With sysmem fallback the allocator can hold more than the card has while the driver still
    # reports some free memory: that alone is spilling.
    spilled = MemoryReading(reserved=9 * GB, free=2 * GB, total=8 * GB)
    assert spilled.at_limit
    assert "spilling" in run(spilled, slow=3.0).message


def test_slowdown_with_memory_free_is_not_blamed_on_memory():
    roomy = MemoryReading(reserved=3 * GB, free=4 * GB, total=8 * GB)
    warning = run(roomy, slow=3.0)
    assert "not full" in warning.message and "spilling" not in warning.message
    assert LEVER not in warning.hint


def test_no_reading_still_warns_and_no_slowdown_never_does():
    assert LEVER in run(None, slow=3.0).hint
    assert run(MemoryReading(0, 0, 8 * GB), slow=0.3) is None  # 1.2x is not a slowdown


def test_reading_uses_the_cuda_driver_not_proc(monkeypatch):
    """The Windows path: no /proc, no platform branch, only torch.cuda's driver calls."""
    import torch

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise AssertionError(f"read {path}")
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (GB // 4, 8 * GB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 7 * GB)
    reading = watchdog.cuda_memory("cuda:0")
    assert reading == MemoryReading(reserved=7 * GB, free=GB // 4, total=8 * GB)
    assert reading.at_limit


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU case")
def test_reading_without_a_gpu_is_none():
    assert watchdog.cuda_memory() is None


@pytest.mark.slow
def test_the_worker_reports_a_spill_with_its_own_settings_lever(tmp_path, tiny_model):
    """Through the real worker (tests/fault_worker.py): steps turn slow after 30 while the
    (faked) GPU memory is full; the warning event names this run's setting to change
    (train.memory_lever: gradient checkpointing first) and training still finishes."""
    project = make_project(tmp_path / "p", tiny_model, max_steps=50, sample_every_n_epochs=0,
                           save_every_n_epochs=0)
    run = run_worker("train", str(project), faults={"spill": dict(
        after=30, seconds=0.4, free=GB // 8, total=8 * GB, reserved=int(7.5 * GB))})
    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [w for w in run.of("warning") if "slowed down" in w["message"]]
    assert len(warnings) == 1  # said once, not every step
    assert "spilling" in warnings[0]["message"] and "7.9 GB of 8.0 GB" in warnings[0]["message"]
    assert warnings[0]["hint"].startswith("Turn on gradient checkpointing.")
    assert run.of("done")[0]["step"] == 50
