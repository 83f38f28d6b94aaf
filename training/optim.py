"""Optimizers and learning-rate schedules, with clear messages where one is unavailable."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler

from studio.config import LrSchedule, Optimizer, TrainConfig
from studio.errors import UserError


class OptimizerUnavailable(UserError):
    field = "optimizer"


def build_optimizer(cfg: TrainConfig, params, device: torch.device) -> torch.optim.Optimizer:
    if cfg.optimizer == Optimizer.adamw:
        # fused: one kernel for all LoRA tensors; measured 4.5-7x faster than foreach on CPU
        # (benchmarks, docs/benchmarks.md), and the usual choice on CUDA.
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                 fused=device.type in ("cuda", "cpu"))
    if cfg.optimizer == Optimizer.adamw8bit:
        if device.type != "cuda":
            raise OptimizerUnavailable("AdamW 8-bit needs an NVIDIA GPU (bitsandbytes).",
                                       "Choose the AdamW optimizer when training on this device.")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise OptimizerUnavailable("AdamW 8-bit needs the bitsandbytes package.",
                                       "Install it with: pip install bitsandbytes") from None
        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == Optimizer.prodigy:
        from prodigyopt import Prodigy

        # Prodigy estimates the step size itself (one estimate for all parameter groups);
        # learning_rate multiplies it. The text encoder's rate is an AdamW-scale number (5e-5)
        # that Prodigy took as a multiplier, so the text encoder barely trained (issue 17 item
        # 10): here every group uses the UNet's multiplier, as kohya advises for Prodigy.
        params = [dict(g, lr=cfg.learning_rate) if isinstance(g, dict) else g for g in params]
        return Prodigy(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                       safeguard_warmup=cfg.lr_warmup_steps > 0, use_bias_correction=True)
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                     scale_parameter=False, relative_step=False, warmup_init=False)


def build_schedule(cfg: TrainConfig, optimizer, total_steps: int):
    name = cfg.lr_scheduler.value
    if cfg.lr_scheduler == LrSchedule.constant and cfg.lr_warmup_steps:
        name = "constant_with_warmup"  # diffusers' "constant" ignores warmup
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                         num_training_steps=total_steps)
