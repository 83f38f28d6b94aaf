"""Notice when training steps slow down several-fold, and say whether GPU memory spilling is why:
on Windows, NVIDIA drivers silently spill GPU memory into system RAM ("sysmem fallback"),
turning 1 s/step into 70 s/step (anchors.md); Linux drivers fail with out-of-memory instead,
but another program filling the card slows a run just the same.

The memory reading comes from the CUDA driver through torch (cudaMemGetInfo and the caching
allocator's reserved bytes): the same call on Windows and Linux, no /proc."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from studio.protocol import WarningEvent

BASELINE_STEPS = 20  # steps after warm-up that define "normal" speed
WINDOW = 10
SLOWDOWN = 4.0
FULL = 0.95  # memory this close to the card's size counts as "at the limit"
SYSMEM_FALLBACK = ("On Windows you can also set 'CUDA - Sysmem Fallback Policy' to 'Prefer No "
                   "Sysmem Fallback' in the NVIDIA Control Panel: a run that does not fit then "
                   "stops with an out-of-memory error instead of crawling.")


@dataclass(frozen=True)
class MemoryReading:
    """GPU memory at one moment, in bytes: what this process's allocator holds, what the
    driver says is free on the card (every process counted), and the card's size."""
    reserved: int
    free: int
    total: int

    @property
    def at_limit(self) -> bool:
        """Whether the card is full: the driver has (almost) nothing free, or this process
        holds more than the card has, which only spilling into system RAM allows."""
        return self.total > 0 and (self.free <= (1 - FULL) * self.total
                                   or self.reserved >= FULL * self.total)


def cuda_memory(device=None) -> MemoryReading | None:
    """The GPU's memory now (torch.cuda.mem_get_info: cudaMemGetInfo on every platform), or
    None where it cannot be read."""
    import torch

    try:
        free, total = torch.cuda.mem_get_info(device)
        return MemoryReading(int(torch.cuda.memory_reserved(device)), int(free), int(total))
    except (RuntimeError, AssertionError, ValueError):  # no CUDA, or a driver that will not say
        return None


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


class StepWatchdog:
    """`lever`: the setting to change when memory is the cause (train.memory_lever's sentence);
    `memory`: reads the GPU's memory when a slowdown is seen (cuda_memory; a fake in tests)."""

    def __init__(self, enabled: bool, warmup: int = 5, lever: str = "",
                 memory: Callable[[], MemoryReading | None] = cuda_memory):
        self.enabled = enabled
        self.warmup = warmup
        self.lever = lever or "Lower the batch size or resolution, or turn on gradient checkpointing."
        self.memory = memory
        self.times: list[float] = []
        self.baseline: float | None = None
        self.warned = False

    def observe(self, seconds: float) -> WarningEvent | None:
        """Record one step's duration; a warning the first time steps run SLOWDOWN× slower."""
        if not self.enabled or self.warned:
            return None
        self.times.append(seconds)
        n = len(self.times)
        if self.baseline is None:
            if n >= self.warmup + BASELINE_STEPS:
                self.baseline = statistics.median(self.times[self.warmup:])
            return None
        recent = statistics.median(self.times[-WINDOW:])
        if n >= self.warmup + BASELINE_STEPS + WINDOW and recent > SLOWDOWN * self.baseline:
            self.warned = True
            return self.warning(recent, self.memory())
        return None

    def warning(self, recent: float, mem: MemoryReading | None) -> WarningEvent:
        slowed = f"Training slowed down from {self.baseline:.2f} s to {recent:.2f} s per step"
        if mem is not None and mem.at_limit:
            return WarningEvent(
                message=f"{slowed}, with the GPU's memory full ({_gb(mem.total - mem.free)} of "
                        f"{_gb(mem.total)} in use, {_gb(mem.reserved)} by training): it is "
                        f"probably spilling into system RAM.",
                hint=f"{self.lever} Or choose a preset for less GPU memory. {SYSMEM_FALLBACK}")
        if mem is not None:  # memory is not the cause: say so rather than send them tuning it
            return WarningEvent(
                message=f"{slowed}, with GPU memory not full ({_gb(mem.total - mem.free)} of "
                        f"{_gb(mem.total)} in use).",
                hint="Another program may be using the GPU, or the card is too hot and "
                     "slowing itself down. Training goes on.")
        return WarningEvent(
            message=f"{slowed}.",
            hint=f"If the GPU's memory is full, it is probably spilling into system RAM: "
                 f"{self.lever} {SYSMEM_FALLBACK}")
