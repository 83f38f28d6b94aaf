"""The diffusion training loss: noise a latent, predict, compare (with min-SNR weighting)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def snr(noise_scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) at each timestep."""
    alphas = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas / (1.0 - alphas).clamp(min=1e-12)


def target_for(noise_scheduler, prediction: str, latents, noise, timesteps) -> torch.Tensor:
    if prediction == "v_prediction":  # Salimans & Ho 2022, "Progressive Distillation" §4
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    return noise


def min_snr_weights(noise_scheduler, prediction: str, timesteps, gamma: float) -> torch.Tensor:
    """Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting": min(SNR, γ)/SNR
    for ε-prediction, min(SNR, γ)/(SNR + 1) for v-prediction (the v target already carries an
    SNR + 1 factor). SNR is floored so zero-terminal-SNR schedules (SNR = 0 at t = T) stay finite."""
    s = snr(noise_scheduler, timesteps).clamp(min=1e-8)
    clipped = torch.minimum(s, torch.full_like(s, gamma))
    return clipped / (s + 1) if prediction == "v_prediction" else clipped / s


def diffusion_loss(unet, latents: torch.Tensor, text: torch.Tensor, noise_scheduler,
                   prediction: str, noise: torch.Tensor, timesteps: torch.Tensor,
                   min_snr_gamma: float = 0.0, dtype: torch.dtype = torch.float32,
                   added_cond: dict | None = None) -> torch.Tensor:
    """Mean loss over the batch. All tensors are on the UNet's device already. `added_cond`:
    SDXL's pooled text embeddings and time ids."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    target = target_for(noise_scheduler, prediction, latents, noise, timesteps)
    extra = {} if added_cond is None else {"added_cond_kwargs": {
        k: v.to(dtype) for k, v in added_cond.items()}}
    pred = unet(noisy.to(dtype), timesteps, text.to(dtype), **extra).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if min_snr_gamma > 0:
        per_sample = per_sample * min_snr_weights(noise_scheduler, prediction, timesteps,
                                                  min_snr_gamma)
    return per_sample.mean()


def sample_noise(shape, gen: torch.Generator, offset: float) -> torch.Tensor:
    """Gaussian noise, plus a per-channel constant when `offset` > 0 (Guttenberg 2023, "Diffusion
    with Offset Noise"): lets the model change an image's overall brightness."""
    noise = torch.randn(shape, generator=gen)
    if offset > 0:
        noise = noise + offset * torch.randn((shape[0], shape[1], 1, 1), generator=gen)
    return noise
