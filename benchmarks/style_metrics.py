"""Style distance and prompt adherence for the demo style benchmark (benchmarks/style_learning.py).

Style distance between a set of generated images and the style set, three components, each 0 for
"same as the style set" and about 1 for "nothing like it":

- `colour`: total-variation distance (0..1) between the pooled colour histograms of the two sets,
  each pixel binned to its nearest prototype colour (the base model's 12 colours, the style's 4
  inks, their halftone shades and the outline ink): is the picture drawn in the style's inks?
  (A plain RGB cube histogram either lumps the base red with the style's brick red or, finer,
  counts every VAE colour shift as "unlike".)
- `texture`: relative difference of the fine-texture energy (mean |x - blur5(x)|, the dots and
  outlines) and of the mean edge strength (gradient magnitude), averaged.
- `gram`: relative Frobenius distance between the set-mean Gram matrices of a FIXED random conv
  net (seeded; three layers), averaged over layers: texture statistics a la Gatys et al.

`combined` is the mean of the three. Everything is deterministic (numpy + a seeded torch net).

Adherence: background and foreground colour names judged as in scripts/pocket/measure.py, where a
colour word may be matched by the base model's colour OR the style's ink of that name (the style's
"yellow" is mustard, its "white" cream): the question is whether the LoRA keeps the prompt's
colours, not whether it keeps the base model's exact shades.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scripts.pocket import measure, shapes
from scripts.pocket.demo_style import OUTLINE, PALETTE, shade

BINS = np.array([shapes.COLOURS[n] for n in measure.NAMES] + list(PALETTE.values())
                + [shade(c, 0.72) for c in PALETTE.values()] + [OUTLINE], np.float32) / 255.0


def load_images(folder: Path) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(Path(folder).glob("*.png"))]


def _array(images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), np.float32) / 255.0 for im in images])


def colour_hist(images) -> np.ndarray:
    px = _array(images).reshape(-1, 1, 3)
    h = np.bincount(((px - BINS[None]) ** 2).sum(-1).argmin(1), minlength=len(BINS))
    return h / h.sum()


def texture_stats(images) -> dict[str, float]:
    x = torch.from_numpy(_array(images)).permute(0, 3, 1, 2)
    blur = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    g = x.mean(1)
    gx, gy = g[:, :, 1:] - g[:, :, :-1], g[:, 1:, :] - g[:, :-1, :]
    edge = (gx[:, :-1, :] ** 2 + gy[:, :, :-1] ** 2).sqrt()
    return {"energy": float((x - blur).abs().mean()), "edge": float(edge.mean())}


class RandomNet:
    """A fixed, seeded random conv net whose Gram matrices describe texture."""

    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        shapes_ = [(16, 3, 3), (32, 16, 3), (32, 32, 3)]
        self.weights = [torch.randn(o, i, k, k, generator=gen) * (2.0 / (i * k * k)) ** 0.5
                        for o, i, k in shapes_]

    @torch.no_grad()
    def grams(self, images) -> list[torch.Tensor]:
        x = torch.from_numpy(_array(images)).permute(0, 3, 1, 2) * 2 - 1
        out = []
        for i, w in enumerate(self.weights):
            x = torch.relu(torch.nn.functional.conv2d(x, w, padding=1))
            f = x.flatten(2)
            out.append((f @ f.transpose(1, 2) / f.shape[-1]).mean(0))  # set-mean Gram
            if i < len(self.weights) - 1:
                x = torch.nn.functional.avg_pool2d(x, 2)
        return out


class StyleReference:
    """The style set's statistics, computed once; `distance(images)` -> the components."""

    def __init__(self, images, seed: int = 0):
        self.net = RandomNet(seed)
        self.hist = colour_hist(images)
        self.tex = texture_stats(images)
        self.grams = self.net.grams(images)

    def distance(self, images) -> dict[str, float]:
        colour = 0.5 * float(np.abs(colour_hist(images) - self.hist).sum())
        tex = texture_stats(images)
        texture = float(np.mean([abs(tex[k] - self.tex[k]) / self.tex[k] for k in tex]))
        gram = float(np.mean([((g - r).norm() / r.norm()).item()
                              for g, r in zip(self.net.grams(images), self.grams)]))
        return {"colour": colour, "texture": texture, "gram": gram,
                "combined": (colour + texture + gram) / 3}


# --- adherence ------------------------------------------------------------------------------
_NAMES = list(measure.NAMES) + list(PALETTE)
_PROTOS = np.array([shapes.COLOURS[n] for n in measure.NAMES] + list(PALETTE.values()), np.float32)


def colour_name(rgb) -> str:
    """Nearest named colour, where a name's prototypes are the base colour and the style's ink."""
    return _NAMES[int(np.argmin(((_PROTOS - np.asarray(rgb, np.float32)) ** 2).sum(1)))]


def judge(image: Image.Image) -> dict:
    """-> {bg, fg}: colour names of the background (border median) and the subject (median of the
    pixels far from the background), as measure.py, adapted to the style's dots and outlines."""
    a = np.asarray(image.convert("RGB"), np.float32)
    border = np.concatenate([a[:3].reshape(-1, 3), a[-3:].reshape(-1, 3),
                             a[:, :3].reshape(-1, 3), a[:, -3:].reshape(-1, 3)])
    bg = np.median(border, 0)
    mask = np.sqrt(((a - bg) ** 2).sum(-1)) > 60
    # Unlike measure.py: leave out the style's halftone dots (a darker shade of the background)
    # and its dark outline, or the style set itself would be misjudged (measure.py: 25/60 right; this: 56/60).
    mask &= np.sqrt(((a - bg * 0.72) ** 2).sum(-1)) > 45
    mask &= a.max(-1) > 90
    fg = colour_name(np.median(a[mask], 0)) if mask.sum() >= 12 else None
    return {"bg": colour_name(bg), "fg": fg}


def adherence(images, specs) -> dict[str, float]:
    """% of images whose background / foreground / both colours are the prompt's. specs: (fg, bg)."""
    b = f = both = 0
    for im, (want_fg, want_bg) in zip(images, specs):
        j = judge(im)
        b += j["bg"] == want_bg
        f += j["fg"] == want_fg
        both += j["bg"] == want_bg and j["fg"] == want_fg
    n = max(len(specs), 1)
    return {"bg": 100 * b / n, "fg": 100 * f / n, "both": 100 * both / n}
