"""Copy risk: how close each generated image comes to its nearest training image (pixel SSIM, VAE latents).

A LoRA that memorises reproduces its training pictures (Somepalli et al. 2023, "Diffusion Art or
Digital Forgery?"; Carlini et al. 2023, "Extracting Training Data from Diffusion Models"). Two
measures that need no download judge that here: SSIM on grey pixels (Wang et al. 2004) for "the
same picture", and the distance in the base model's own latent space, scaled by how far apart
two different training images typically are, for "the same content". The verdict itself is
studio.runs.report_card.is_near_copy, shared with the window.

SSIM is reported relative to its ceiling: every generated image comes out of the base model's
VAE decoder, which cannot redraw a training image more faithfully than its own round trip
(encode, decode) does. The pocket model's VAE round trip of its training images scores SSIM
0.74-0.91 (64 px, the 57 demo images); SD's VAE loses less at 512 px but never nothing.
Dividing by that image's round-trip SSIM makes 1.0 "as close as this model can draw it" on
every model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.sampling import vae_tiles
from training.style_stats import fp32

SSIM_SIDE = 128  # SSIM is computed on images scaled down to at most this many pixels a side
# A VAE that cannot redraw its own input even this well (an untrained test model) would, as a
# divisor, turn faint resemblances into full scores; the pocket VAE scores 0.74 and up.
MIN_CEILING = 0.5
_C1, _C2 = 0.01 ** 2, 0.03 ** 2  # Wang et al.'s constants for a dynamic range of 1


def _grey(pixels: torch.Tensor) -> torch.Tensor:
    """[N, 1, h, w] luma in [0, 1] from [-1, 1] RGB, at most SSIM_SIDE a side."""
    rgb = (pixels.float() + 1) / 2
    grey = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
    side = max(grey.shape[-2:])
    if side > SSIM_SIDE:
        grey = F.interpolate(grey, scale_factor=SSIM_SIDE / side, mode="area")
    return grey


def _window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of every image in `a` [N, 3, H, W] with every image in `b` [M, 3, H, W]
    (both in [-1, 1], one size): [N, M]."""
    ga, gb = _grey(a), _grey(b)
    win = _window(min(11, *ga.shape[-2:]))

    def blur(t):
        return F.conv2d(t, win)

    rows = []
    for x in ga:  # one generated image against chunks of the training set bounds the memory
        parts = []
        for start in range(0, len(gb), 64):
            y = gb[start:start + 64]
            xx = x[None].expand_as(y)
            mx, my = blur(xx), blur(y)
            vx, vy = blur(xx * xx) - mx ** 2, blur(y * y) - my ** 2
            cov = blur(xx * y) - mx * my
            s = ((2 * mx * my + _C1) * (2 * cov + _C2)) / \
                ((mx ** 2 + my ** 2 + _C1) * (vx + vy + _C2))
            parts.append(s.mean(dim=(1, 2, 3)))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def typical_distance(latents: torch.Tensor) -> float:
    """The median distance from a training image's latent to its nearest other one: the scale
    "different pictures" have in this dataset (with one image: the latent's own size)."""
    flat = latents.reshape(len(latents), -1)
    if len(flat) < 2:
        return float(flat.norm()) or 1.0
    d = torch.cdist(flat, flat)
    d.fill_diagonal_(float("inf"))
    return float(d.min(dim=1).values.median()) or 1.0


@dataclass
class Nearest:
    ssim: float  # the highest SSIM to any training image, ÷ that image's VAE ceiling (≤ 1)
    latent_ratio: float  # the lowest latent distance to a training image / typical distance
    index: int  # the training image behind `ssim`
    ssim_raw: float = 0.0  # the same SSIM before dividing by the ceiling


class TrainingSet:
    """The training images as the copy check sees them: pixels, VAE latents (posterior
    means), their typical distance, and each image's SSIM ceiling, computed on first need
    (only the training images some output comes closest to are decoded)."""

    def __init__(self, pixels: torch.Tensor, latents: torch.Tensor, decode):
        self.pixels, self.latents = pixels, latents
        self.typical = typical_distance(latents)
        self._decode = decode  # [k, C, h, w] latents -> [k, 3, H, W] pixels in [-1, 1]
        self._ceiling: dict[int, float] = {}

    def ceiling(self, index: int) -> float:
        """SSIM of training image `index` with its own VAE round trip."""
        if index not in self._ceiling:
            recon = self._decode(self.latents[index:index + 1]).float().cpu().clamp(-1, 1)
            value = float(ssim(recon, self.pixels[index:index + 1])[0, 0])
            self._ceiling[index] = max(value, MIN_CEILING)
        return self._ceiling[index]

    def nearest(self, pixels: torch.Tensor, latents: torch.Tensor) -> list[Nearest]:
        """For each generated image, how close it comes to the training set."""
        sims = ssim(pixels, self.pixels)
        dists = torch.cdist(latents.reshape(len(latents), -1),
                            self.latents.reshape(len(self.latents), -1))
        out = []
        for i in range(len(pixels)):
            best = int(sims[i].argmax())
            raw = float(sims[i, best])
            out.append(Nearest(min(1.0, raw / self.ceiling(best)),
                               float(dists[i].min()) / self.typical, best, raw))
        return out


def vae_decoder(vae):
    """`decode` for TrainingSet: the base model's VAE from unscaled latents, in fp32, in tiles
    above 768² px as training samples are (sampling.vae_tiles: an SDXL 1024 px decode in fp32
    beside the fp16 UNet would not fit an 8 GB card whole)."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        height, width = (side * scale for side in latents.shape[-2:])
        with fp32(vae) as device, vae_tiles(vae, width, height):
            return vae.decode(latents.to(device)).sample
    return decode
