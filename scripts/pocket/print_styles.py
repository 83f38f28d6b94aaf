"""Generic printed looks (halftone dots, stripes, dark outlines, muted inks) for the pocket model's
"styles" stage and the decoder fine-tune, with the words that describe them.

Why (issue 14): a real Stable Diffusion model has seen countless styles, so a style LoRA only has to
steer it towards one it can already draw. The first pocket model had only seen flat saturated shapes:
a LoRA had to teach a 1.5 M-parameter UNet to draw a texture from scratch in 150 steps, and on held-out
prompts it drew a maze-like worm pattern instead of the demo's dots. These pictures give the base model
the vocabulary of looks (random periods, phases, inks, widths), captioned with plain style words
("dotted, outlined, a red circle on a blue background"); the demo style itself (its palette, its 10 px
dots, the trigger word) is never shown to the base model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from scripts.pocket import shapes


def muted(rgb, rng) -> tuple[int, int, int]:
    """A printed ink near a named colour: pulled towards grey and tinted a little, so the colour
    word still names it ("red" stays reddish) while the base model learns inks are not all pure."""
    c = np.asarray(rgb, np.float32)
    grey = c.mean()
    c = grey + (c - grey) * rng.uniform(0.45, 1.0) + rng.uniform(-20, 20, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def ground(size, bg, rng, kind):
    """The background at the supersampled size: flat, halftone dots or stripes of a darker shade."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / shapes.SS
    period, phase = rng.uniform(8, 16), rng.uniform(0, 16)
    if kind == "dots":
        d = np.hypot((xx + phase) % period - period / 2, (yy + phase) % period - period / 2)
        mask = d < period * rng.uniform(0.18, 0.34)
    elif kind == "stripes":
        a = rng.uniform(0, np.pi)
        mask = np.sin((xx * np.cos(a) + yy * np.sin(a) + phase) * 2 * np.pi / period) > 0.3
    else:
        mask = np.zeros((size, size), bool)
    bg = np.asarray(bg, np.float32)
    return np.where(mask[..., None], bg * rng.uniform(0.55, 0.85), bg)


def render_styled(spec, rng) -> tuple[Image.Image, list[str]]:
    """The picture of `spec` in a random printed look, and the style words that describe it."""
    kind = rng.choice(["dots", "dots", "stripes", "flat"])
    outline = kind == "flat" or rng.random() < 0.6  # every styled picture has at least one trait
    s = shapes.SIZE * shapes.SS
    arr = ground(s, muted(shapes.COLOURS[spec["bg"]], rng), rng, kind)
    im = Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8))
    kw = {}
    if outline:
        # at most ~a fifth of the radius, or a small shape is all outline
        kw = dict(outline=tuple(int(c) for c in rng.integers(10, 70, 3)),
                  width=min(rng.uniform(2, 4), spec["r"] * 0.22))
    shapes.draw_shape(ImageDraw.Draw(im), spec["shape"], spec["cx"], spec["cy"], spec["r"],
                      muted(shapes.COLOURS[spec["fg"]], rng), **kw)
    words = {"dots": [str(rng.choice(["dotted", "halftone"]))], "stripes": ["striped"],
             "flat": []}[kind] + (["outlined"] if outline else [])
    rng.shuffle(words)
    return im.resize((shapes.SIZE, shapes.SIZE), Image.BOX), words


def styled_caption(caption: str, words: list[str]) -> str:
    """'dotted, outlined, a red circle on a blue background' (tags first, as artists write them)."""
    return ", ".join([*words, caption]) if caption else ", ".join(words)
