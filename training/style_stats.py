"""Style statistics of a set of images from the base model's own VAE encoder (plus colour), and their distance.

Neural style transfer describes a style by feature statistics that ignore where things are:
Gram matrices of a network's feature maps (Gatys et al. 2016, "Image Style Transfer Using
Convolutional Neural Networks") and per-channel means and variances (Huang & Belongie 2017,
"Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization"). Those papers use
VGG; here the features come from the VAE encoder every Stable Diffusion model ships, so nothing
is downloaded and the measure follows the model family. Colour moments and histograms cover
what a VAE's early layers see only weakly: palette and tone.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

COMPONENTS = ("vae_mean", "vae_var", "vae_gram", "colour")
HIST_BINS = 8
ENCODE_BATCH = 4  # images per VAE pass: hooks keep every layer's output alive


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1], the VAE's input range (images of one size)."""
    arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0


def _layers(vae) -> list[torch.nn.Module]:
    enc = vae.encoder
    return [enc.conv_in, *enc.down_blocks, enc.mid_block]


@dataclass
class Encoded:
    """Per-image statistics of a set of images, from one pass through the VAE encoder."""

    layers: list[torch.Tensor]  # per encoder layer: [N, channels·(2 + channels)] mean/var/Gram
    channels: list[int]
    colour: torch.Tensor  # [N, 6 + 3·bins]
    latents: torch.Tensor  # [N, C, h, w] posterior means (unscaled): for the copy check

    def head(self, n: int) -> "Encoded":
        """The first n images' statistics."""
        return Encoded([t[:n] for t in self.layers], self.channels, self.colour[:n],
                       self.latents[:n])


@contextmanager
def fp32(vae):
    """The VAE in fp32 for the duration (yields its device): the SDXL VAE overflows in fp16
    (as in training.cache)."""
    param = next(vae.parameters())
    dtype = param.dtype
    if dtype != torch.float32:
        vae.to(dtype=torch.float32)
    try:
        yield param.device
    finally:
        if dtype != torch.float32:
            vae.to(dtype=dtype)


@torch.no_grad()
def encode(vae, images: list[Image.Image]) -> Encoded:
    pixels = to_pixels(images)
    captured: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(
        out[0] if isinstance(out, tuple) else out)) for m in _layers(vae)]
    stats: list[list[torch.Tensor]] = []
    latents = []
    try:
        with fp32(vae) as device:
            for start in range(0, len(pixels), ENCODE_BATCH):
                captured.clear()
                chunk = pixels[start:start + ENCODE_BATCH].to(device)
                latents.append(vae.encode(chunk).latent_dist.mean.float().cpu())
                stats.append([_feature_stats(f.float()) for f in captured])
                channels = [f.shape[1] for f in captured]
    finally:
        for hook in hooks:
            hook.remove()
    per_layer = [torch.cat([s[i] for s in stats]) for i in range(len(stats[0]))]
    return Encoded(per_layer, channels, colour_stats(pixels), torch.cat(latents))


def _feature_stats(f: torch.Tensor) -> torch.Tensor:
    """[N, …] per image: channel means, channel variances, Gram matrix / (H·W), flattened."""
    n, c = f.shape[:2]
    flat = f.reshape(n, c, -1)
    mean = flat.mean(-1)
    var = flat.var(-1, unbiased=False)
    gram = flat @ flat.transpose(1, 2) / flat.shape[-1]
    return torch.cat([mean, var, gram.reshape(n, -1)], dim=1).cpu()


def colour_stats(pixels: torch.Tensor) -> torch.Tensor:
    """[N, 6 + 3·bins]: RGB means and standard deviations, and per-channel histograms."""
    rgb = ((pixels.float() + 1) / 2).clamp(0, 1).reshape(len(pixels), 3, -1)
    hist = torch.stack([torch.stack([torch.histc(ch, HIST_BINS, 0, 1) for ch in img])
                        for img in rgb])
    hist = hist / rgb.shape[-1]
    return torch.cat([rgb.mean(-1), rgb.std(-1, unbiased=False), hist.reshape(len(rgb), -1)],
                     dim=1)


@dataclass
class StyleStats:
    """The statistics of a set of images, averaged over the set (a style is what the images
    share, not what one of them shows)."""

    layers: list[torch.Tensor]
    channels: list[int]
    colour: torch.Tensor

    @classmethod
    def of(cls, encoded: Encoded) -> "StyleStats":
        return cls([t.mean(0) for t in encoded.layers], encoded.channels,
                   encoded.colour.mean(0))

    def _parts(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c, v = self.channels[i], self.layers[i]
        return v[:c], v[c:2 * c], v[2 * c:]


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    # Squared error relative to the reference's own size, so no layer dominates by its scale.
    return float(((a - ref) ** 2).sum() / ((ref ** 2).sum() + 1e-12))


def distance(stats: StyleStats, reference: StyleStats) -> dict[str, float]:
    """Per statistic (COMPONENTS): how far `stats` is from the reference set, averaged over the
    encoder's layers; 0 for identical statistics."""
    n = len(stats.layers)
    out = dict.fromkeys(COMPONENTS, 0.0)
    for i in range(n):
        for name, a, ref in zip(COMPONENTS, stats._parts(i), reference._parts(i)):
            out[name] += _rel(a, ref) / n
    out["colour"] = _rel(stats.colour, reference.colour)
    return out
