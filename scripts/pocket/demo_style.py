"""Generate assets/demo-style: ~60 pictures of the base model's subjects in ONE distinctive style, + captions.

The style ("zxqstyle" = retro print look), chosen to be learnable by a small LoRA in minutes AND to survive
the 4x VAE (checked by round-trip in check_style.py):
- a limited palette of 4 inks (brick red, mustard yellow, dusty blue, cream) instead of the base model's 12
  saturated colours;
- thick dark outlines (3 px at 64 px, i.e. most of a latent cell; 1 px lines smear out);
- a coarse halftone: dots on a 10 px grid in a darker shade of the background. A 6 px hatching did NOT survive
  the VAE in the study; 10 px is 2.5 latent cells per period, which it reconstructs.
Captions reuse the base wording with the trigger word first, e.g. "zxqstyle, a red circle on a blue background",
so the LoRA only has to learn the look, not new words.

    python -m scripts.pocket.demo_style [--out assets/demo-style] [--count 60]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from scripts.pocket import shapes
from scripts.pocket.common import SEED, STYLE_DIR
from scripts.pocket.tokenizer import TRIGGER

PALETTE = {  # caption word -> ink colour
    "red": (200, 60, 45),
    "yellow": (235, 190, 70),
    "blue": (50, 95, 160),
    "white": (242, 232, 205),  # cream paper: still called "white", the base model's nearest word
}
OUTLINE = (35, 30, 45)
OUTLINE_PX = 3.0
DOT_PERIOD = 10.0
DOT_RADIUS = 2.6


def halftone(size, period, radius, offset):
    """Boolean mask of a dot grid (dots at cell centres), drawn at the supersampled resolution."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / shapes.SS
    cx = (xx + offset) % period - period / 2
    cy = (yy + offset) % period - period / 2
    return np.hypot(cx, cy) < radius


def shade(rgb, f):
    return tuple(int(c * f) for c in rgb)


def render(spec, rng):
    s = shapes.SIZE * shapes.SS
    bg = np.array(PALETTE[spec["bg"]], np.float32)
    dot = np.array(shade(PALETTE[spec["bg"]], 0.72), np.float32)
    arr = np.where(halftone(s, DOT_PERIOD, DOT_RADIUS, rng.uniform(0, DOT_PERIOD))[..., None], dot, bg)
    im = Image.fromarray(arr.astype(np.uint8))
    draw_kwargs = dict(fill=PALETTE[spec["fg"]], outline=OUTLINE, width=OUTLINE_PX)
    shapes.draw_shape(ImageDraw.Draw(im), spec["shape"], spec["cx"], spec["cy"], spec["r"], **draw_kwargs)
    return im.resize((shapes.SIZE, shapes.SIZE), Image.BOX)


def sample_specs(count, seed):
    """Cycle shapes evenly; colours from the palette (fg != bg); sizes medium/large mostly, so the outline and
    the dots both have room to show."""
    rng = np.random.default_rng(seed)
    names = list(PALETTE)
    out = []
    for i in range(count):
        spec = shapes.sample_spec(rng, allow_held_out=True)
        fg, bg = rng.choice(names, size=2, replace=False).tolist()
        spec.update(fg=fg, bg=bg, shape=shapes.SHAPES[i % len(shapes.SHAPES)])
        if spec["size"] == "small" and rng.random() < 0.5:  # fewer tiny subjects
            spec.update(size="medium", r=rng.uniform(13.5, 17), cx=32 + rng.uniform(-3, 3),
                        cy=32 + rng.uniform(-3, 3), where=None)
        out.append(spec)
    return out, rng


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(STYLE_DIR))
    ap.add_argument("--count", type=int, default=60)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs, rng = sample_specs(args.count, SEED + 100)
    width = max(2, int(math.log10(args.count)) + 1)
    for i, spec in enumerate(specs):
        stem = f"style_{i:0{width}d}"
        render(spec, rng).save(out / f"{stem}.png", optimize=True)
        (out / f"{stem}.txt").write_text(f"{TRIGGER}, {shapes.caption(spec)}\n", encoding="utf-8")
    print(f"wrote {len(specs)} images + captions to {out}")


if __name__ == "__main__":
    main()
