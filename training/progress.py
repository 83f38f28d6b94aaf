"""Time left in a run, counted from training-step time alone plus the measured cost of the samples and validations still to come, so the ETA holds steady while they run (issue 14)."""

from __future__ import annotations

import bisect
import time

from studio.config import TrainConfig


def sample_steps(cfg: TrainConfig, total: int, per_epoch: int) -> list[int]:
    """The steps after which samples are rendered (studio/step_plan.py's schedule, with epochs
    ending every `per_epoch` steps), sorted."""
    steps: set[int] = set()
    if cfg.sample_every_n_steps:
        steps.update(range(cfg.sample_every_n_steps, total + 1, cfg.sample_every_n_steps))
    if cfg.sample_every_n_epochs and per_epoch:
        every = cfg.sample_every_n_epochs * per_epoch
        steps.update(range(every, total + 1, every))
    if steps or cfg.sample_every_n_steps or cfg.sample_every_n_epochs:
        steps.add(total)  # the last step always samples when sampling is on
    return sorted(steps)


class Eta:
    """Seconds left: (steps left) × (seconds per training step, without extras) + for each kind
    of extra (samples, validation) its occurrences left × its measured seconds. Before an extra
    has run once, its cost is guessed from the step time: a training step is about 3 forward
    passes of its batch (forward + backward); a sample is 2 forwards (classifier-free guidance)
    per denoising step and prompt; the validation loss 5 per held-out image
    (training/validation.py's timesteps)."""

    def __init__(self, total: int, per_epoch: int, cfg: TrainConfig, prompts: int,
                 validation_images: int):
        self.total, self.per_epoch = total, max(per_epoch, 1)
        self.samples = sample_steps(cfg, total, per_epoch)
        self.has_validation = validation_images > 0
        self.guess = {"sample": prompts * cfg.sample_steps * 2 / (3 * cfg.batch_size),
                      "validation": validation_images * 5 / (3 * cfg.batch_size)}
        self.first_step: float | None = None
        self.step_sum, self.step_n = 0.0, 0  # the steps after the first
        self.extra_seconds: dict[str, list[float]] = {"sample": [], "validation": []}

    def step_done(self, seconds: float) -> None:
        # The first step carries warm-up (allocation, kernel choice): left out once there are more.
        if self.first_step is None:
            self.first_step = seconds
        else:
            self.step_sum, self.step_n = self.step_sum + seconds, self.step_n + 1

    def timed(self, kind: str):
        """A context manager that adds the block's duration to `kind`'s measured cost."""
        eta = self

        class Timer:
            def __enter__(self):
                self.t = time.monotonic()

            def __exit__(self, *exc):
                eta.extra_seconds[kind].append(time.monotonic() - self.t)
        return Timer()

    def left(self, kind: str, step: int) -> int:
        """How many times `kind` still runs after `step`."""
        if kind == "sample":
            return len(self.samples) - bisect.bisect_right(self.samples, step)
        if not self.has_validation:
            return 0
        ends = self.total // self.per_epoch - step // self.per_epoch  # epoch ends to come
        return ends + (1 if self.total % self.per_epoch and step < self.total else 0)

    def planned(self, per_step: float) -> dict[str, float]:
        """Before the run (`python -m training check`): the whole run's seconds by part, for
        a guessed step time."""
        return {"training": per_step * self.total,
                "samples": per_step * self.guess["sample"] * self.left("sample", 0),
                "validation": per_step * self.guess["validation"] * self.left("validation", 0)}

    def seconds_left(self, step: int) -> float | None:
        if self.first_step is None:
            return None
        per_step = self.step_sum / self.step_n if self.step_n else self.first_step
        left = per_step * (self.total - step)
        for kind, seconds in self.extra_seconds.items():
            cost = sum(seconds) / len(seconds) if seconds else per_step * self.guess[kind]
            left += cost * self.left(kind, step)
        return left


class Throttle:
    """Calls `report(done, total)` at most every `interval` seconds, and always at the end."""

    def __init__(self, report, interval: float = 0.5):
        self.report, self.interval, self.last = report, interval, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self.last >= self.interval:
            self.last = now
            self.report(done, total)
