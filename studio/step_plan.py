"""What the training loop does after each step: one pure decision, tested without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from studio.config import TrainConfig


@dataclass(frozen=True)
class Actions:
    """After a step, in this order: report progress, measure the validation loss, save a LoRA
    file (which always comes with a resume point), save a resume point, render samples, stop."""
    progress: bool = False
    validate: bool = False
    save_lora: bool = False
    resume_point: bool = False
    sample: bool = False
    stop: bool = False


# "auto" (save_every_n_epochs = -1): a LoRA file per epoch up to this many epochs, else files
# spread to about this many, so an epoch x strength grid stays a readable size (issue 14).
AUTO_EPOCH_FILES = 20


def lora_every_n_epochs(cfg: TrainConfig, total_epochs: int) -> int:
    """Every how many epochs a LoRA file is saved (0: never), with "auto" resolved for a run of
    `total_epochs` epochs (0 when unknown: every epoch)."""
    if cfg.save_every_n_epochs >= 0:
        return cfg.save_every_n_epochs
    return max(1, math.ceil(total_epochs / AUTO_EPOCH_FILES))


def after_step(step: int, total: int, epochs_done: int, epoch_done: bool, stopping: bool,
               cfg: TrainConfig, minutes_since_resume_point: float, *,
               progress_due: bool = False, save_now: bool = False, sample_now: bool = False,
               has_validation: bool = True, total_epochs: int = 0) -> Actions:
    """The actions after optimizer step `step` (1-based) of `total`.

    `epochs_done`: epochs completed so far (counting one that ended with this step, when
    `epoch_done`); `stopping`: a stop was requested (the LoRA is then saved as it is);
    `progress_due`: the progress rate limit allows a report; `save_now`/`sample_now`: the GUI
    asked for a LoRA file or samples at once; `total_epochs`: the epochs of the whole run (for
    `save_every_n_epochs` = auto).
    """
    last = step == total
    every_epochs = lora_every_n_epochs(cfg, total_epochs)
    # No extra file at the last step or on stop: the final LoRA file is that state.
    save_lora = save_now or (not last and not stopping and (
        bool(cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0)
        or bool(every_epochs and epoch_done and epochs_done % every_epochs == 0)))
    # A resume point whenever a LoRA file is saved, on stop (to continue later), and on a timer
    # so a crash loses little; none after the last step (the run is complete then).
    timed = bool(cfg.resume_point_every_minutes and not last
                 and minutes_since_resume_point > cfg.resume_point_every_minutes)
    scheduled_sample = (
        bool(cfg.sample_every_n_steps and step % cfg.sample_every_n_steps == 0)
        or bool(cfg.sample_every_n_epochs and epoch_done
                and epochs_done % cfg.sample_every_n_epochs == 0)
        or (last and bool(cfg.sample_every_n_steps or cfg.sample_every_n_epochs)))
    return Actions(
        progress=last or stopping or progress_due,
        # Each epoch's end, and the LoRA as finally saved.
        validate=has_validation and (epoch_done or last or stopping),
        save_lora=save_lora,
        resume_point=save_lora or stopping or timed,
        sample=sample_now or (not stopping and scheduled_sample),
        stop=stopping)


def shown_epoch(epochs_done: int, epoch_done: bool) -> int:
    """The 1-based epoch a step belongs to (the one it finished, or the one under way)."""
    return epochs_done if epoch_done else epochs_done + 1
