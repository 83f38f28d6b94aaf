"""Notice when training steps slow down several-fold: on Windows, NVIDIA drivers silently spill
GPU memory into system RAM ("sysmem fallback"), turning 1 s/step into 70 s/step (anchors.md)."""

from __future__ import annotations

import statistics

from studio.protocol import WarningEvent

BASELINE_STEPS = 20  # steps after warm-up that define "normal" speed
WINDOW = 10
SLOWDOWN = 4.0


class StepWatchdog:
    def __init__(self, enabled: bool, warmup: int = 5):
        self.enabled = enabled
        self.warmup = warmup
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
            return WarningEvent(
                message=f"Training slowed down from {self.baseline:.2f} s to {recent:.2f} s per "
                        f"step.",
                hint="The GPU is probably out of memory and spilling into system RAM. Lower the "
                     "batch size or resolution, turn on gradient checkpointing, or choose a "
                     "preset for less GPU memory; on Windows you can also set 'CUDA Sysmem "
                     "Fallback Policy' to 'Prefer No Sysmem Fallback' in the NVIDIA settings.")
        return None
