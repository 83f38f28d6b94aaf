"""Prompt fidelity: the base model as a zero-shot classifier of generated images among candidate prompts.

Li et al. 2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier" (and Clark & Jaini
2023, "Text-to-Image Diffusion Models are Zero-Shot Classifiers"): noise an image's latent, ask
the UNet to denoise it under each candidate prompt, and pick the prompt whose prediction error
is lowest. Every candidate sees the same noise at the same timesteps, so the comparison is
paired and the noise's own variance cancels. The error is the training loss itself
(training.loss.diffusion_loss), so the classifier measures what training optimises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.loss import diffusion_loss


def timesteps(num_train_timesteps: int, count: int) -> torch.Tensor:
    """`count` timesteps evenly spread over the schedule (bin centres, never 0 or T)."""
    return torch.tensor([int(num_train_timesteps * (i + 0.5) / count) for i in range(count)])


@dataclass
class Candidates:
    """The candidate prompts, encoded once: text [K, tokens, dim]; SDXL pooled [K, dim] and
    time ids [6] (None for SD1/SD2)."""

    text: torch.Tensor
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.text)


@torch.no_grad()
def errors(unet, latent: torch.Tensor, candidates: Candidates, noise_scheduler, prediction: str,
           noise: torch.Tensor, steps: torch.Tensor, dtype: torch.dtype = torch.float32
           ) -> torch.Tensor:
    """[K] mean denoising error of the (scaled) latent [C, h, w] under each candidate, with
    noise [T, C, h, w] at timesteps [T] shared by all candidates."""
    device = latent.device
    lat = latent[None].expand(len(steps), -1, -1, -1)
    out = []
    for k in range(len(candidates)):
        text = candidates.text[k:k + 1].expand(len(steps), -1, -1)
        added = None
        if candidates.pooled is not None:
            added = {"text_embeds": candidates.pooled[k:k + 1].expand(len(steps), -1).to(device),
                     "time_ids": candidates.time_ids[None].expand(len(steps), -1).to(device)}
        out.append(float(diffusion_loss(unet, lat, text.to(device), noise_scheduler, prediction,
                                        noise.to(device), steps.to(device), 0.0, dtype, added)))
    return torch.tensor(out)


def classify(unet, latent: torch.Tensor, candidates: Candidates, noise_scheduler,
             prediction: str, noise: torch.Tensor, steps: torch.Tensor,
             dtype: torch.dtype = torch.float32) -> tuple[int, torch.Tensor]:
    """(index of the winning candidate, the errors of all candidates)."""
    errs = errors(unet, latent, candidates, noise_scheduler, prediction, noise, steps, dtype)
    return int(errs.argmin()), errs
