"""The diffusion training loss (noise a latent, predict, compare, min-SNR weighting) and one
micro-batch of training (`train_step`), shared by the loop and the speed benchmark."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Posterior:
    """A batch's cached VAE posterior (unscaled): train_step samples it afresh each step, as
    encoding the images every step would."""
    mean: torch.Tensor
    std: torch.Tensor


def host_draws(latents, gen: torch.Generator, noise_offset: float, n_timesteps: int
               ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(posterior noise or None, noise, timesteps) for a micro-batch, drawn from the CPU
    generator in a fixed order, so runs repeat exactly on any device and resume exactly."""
    shape = latents.mean.shape if isinstance(latents, Posterior) else latents.shape
    eps = torch.randn(shape, generator=gen) if isinstance(latents, Posterior) else None
    noise = sample_noise(shape, gen, noise_offset)
    timesteps = torch.randint(0, n_timesteps, (shape[0],), generator=gen)
    return eps, noise, timesteps


def to_device(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The host tensors on `device` in one copy. Every blocking host-to-device copy waits for the
    GPU's stream (PyTorch's copy_ synchronises the stream unless non_blocking), and a step made
    three or four of them (posterior noise, noise, timesteps, alphas_cumprod; issue 17 item 10):
    here they travel as one pinned buffer, non-blocking, so the GPU never drains mid-step."""
    if device.type == "cpu":
        return tensors
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    if device.type == "cuda":
        flat = flat.pin_memory()
    flat = flat.to(device, non_blocking=True)
    out, start = [], 0
    for t in tensors:
        part = flat[start:start + t.numel()].view(t.shape)
        out.append(part if t.is_floating_point() else part.to(t.dtype))
        start += t.numel()
    return out


@dataclass(frozen=True)
class LatentScale:
    """SD scales VAE latents to about unit variance (0.18215 for SD1.x); some VAEs also shift
    them. The loop and the validation loss scale the cached (unscaled) latents the same way."""
    scaling: float
    shift: float = 0.0

    @classmethod
    def of(cls, vae) -> "LatentScale":
        return cls(float(vae.config.scaling_factor), float(vae.config.get("shift_factor") or 0.0))

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.shift) * self.scaling


def train_step(accelerator, unet, batch: tuple, noise_scheduler, prediction: str,
               scale: LatentScale, gen: torch.Generator, noise_offset: float,
               min_snr_gamma: float, dtype: torch.dtype, accumulation: int = 1) -> torch.Tensor:
    """One micro-batch: noise the batch's latents at random timesteps, predict, backpropagate
    (divided by `accumulation`); returns the detached loss. `batch`: (the unscaled latents or
    their Posterior, text embeddings, SDXL's added conditioning or None), as
    TrainingData.batch gives it. Noise and timesteps come from the CPU generator `gen`
    (host_draws), and reach the device in one copy (to_device)."""
    latents, text, added = batch
    device = accelerator.device
    eps, noise, timesteps = host_draws(latents, gen, noise_offset,
                                       noise_scheduler.config.num_train_timesteps)
    if eps is None:
        noise, timesteps = to_device([noise, timesteps], device)
        latents = latents.to(device)
    else:
        eps, noise, timesteps = to_device([eps, noise, timesteps], device)
        latents = latents.mean + latents.std * eps
    latents = scale(latents)
    with accelerator.autocast():
        loss = diffusion_loss(unet, latents, text.to(device), noise_scheduler, prediction, noise,
                              timesteps, min_snr_gamma, dtype, added)
    accelerator.backward(loss / accumulation)
    return loss.detach()
