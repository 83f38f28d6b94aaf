"""The validation loss: held-out images at fixed noise and timesteps, so epochs compare honestly."""

from __future__ import annotations

import torch

from training.data import TrainingData
from training.loss import LatentScale, diffusion_loss

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # of the schedule: one timestep from each part


@torch.no_grad()
def validation_loss(unet, val: TrainingData, noise_scheduler, prediction: str, scale: LatentScale,
                    seed: int, device: torch.device, dtype: torch.dtype, autocast,
                    on_progress=None) -> float:
    """Mean loss over the held-out images, each at the timesteps FRACTIONS with the same noise
    every time (drawn from `seed`). `unet` is the unwrapped model: rank 0 alone runs this, so no
    DDP collective may happen. `autocast`: the accelerator's autocast context factory.
    `on_progress(done, total)`: after each image."""
    gen = torch.Generator().manual_seed(seed)
    n_t = noise_scheduler.config.num_train_timesteps
    timesteps = torch.tensor([int(n_t * f) for f in FRACTIONS])
    k = len(timesteps)
    was_training = unet.training
    unet.eval()
    losses = []
    try:
        with autocast():
            for i in range(len(val.items)):
                latents = scale(val.latents[i]["mean"][None]).repeat(k, 1, 1, 1)
                noise = torch.randn(latents.shape, generator=gen)
                text = val.text[i:i + 1].repeat(k, 1, 1)
                added = None if val.pooled is None else {
                    "text_embeds": val.pooled[i:i + 1].repeat(k, 1),
                    "time_ids": val.time_ids[i:i + 1].repeat(k, 1)}
                losses.append(float(diffusion_loss(
                    unet, latents.to(device), text.to(device), noise_scheduler, prediction,
                    noise.to(device), timesteps.to(device), 0.0, dtype, added)))
                if on_progress:
                    on_progress(i + 1, len(val.items))
    finally:
        unet.train(was_training)
    return sum(losses) / len(losses)
