"""Procedural training data: one shape in one colour on a flat background, with a caption.

Why procedural: no downloads are possible, every sample must be reproducible from a seed, and a tiny model can
only learn a small, clean world. Each attribute the caption names (colour, shape, size, position, background)
is varied independently so the model has to read the prompt to get it right.

Shapes are drawn at 4x and box-downsampled to 64 px, so edges are anti-aliased like real photos are, instead
of jagged pixel steps the VAE would have to spend capacity on.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SS = 4  # supersampling factor

COLOURS = {
    "red": (220, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 220, 40),
    "green": (40, 165, 60),
    "blue": (35, 80, 220),
    "purple": (135, 55, 185),
    "pink": (245, 135, 195),
    "brown": (125, 80, 40),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "cyan": (40, 200, 220),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
# Positions for small shapes: (caption phrase, x, y) with x, y in [0, 1] of the free area.
POSITIONS = (
    ("at the top left", 0.0, 0.0), ("at the top", 0.5, 0.0), ("at the top right", 1.0, 0.0),
    ("on the left", 0.0, 0.5), ("in the center", 0.5, 0.5), ("on the right", 1.0, 0.5),
    ("at the bottom left", 0.0, 1.0), ("at the bottom", 0.5, 1.0), ("at the bottom right", 1.0, 1.0),
)
# (foreground, shape, background) combinations never shown in training, so the checks can prove the model
# composes words it has seen rather than recalls a memorised picture.
HELD_OUT = {
    ("red", "circle", "white"), ("blue", "square", "yellow"), ("green", "triangle", "pink"),
    ("yellow", "star", "blue"), ("purple", "diamond", "orange"), ("white", "cross", "black"),
}


def polygon(shape, cx, cy, r):
    """Vertices (or a bounding box for the circle) of a shape of 'radius' r centred on (cx, cy)."""
    if shape == "circle":
        return [(cx - r, cy - r), (cx + r, cy + r)]
    if shape == "square":
        s = r * 0.88  # a square of the same radius looks bigger than the circle; shrink to balance area
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a) + r * 0.08))
        return pts
    if shape == "cross":
        t = r * 0.36
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(shape)


def draw_shape(draw, shape, cx, cy, r, fill, outline=None, width=0):
    """Draw on a supersampled canvas; coordinates are in 64-px units."""
    pts = [(x * SS, y * SS) for x, y in polygon(shape, cx, cy, r)]
    kw = {"fill": fill}
    if outline is not None:
        kw.update(outline=outline, width=int(width * SS))
    if shape == "circle":
        draw.ellipse(pts, **kw)
    else:
        draw.polygon(pts, **kw)


def jitter(rgb, rng, amount=12):
    """Small colour noise so 'red' means a neighbourhood of reds, not one exact value."""
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def sample_spec(rng, allow_held_out=False):
    """Pick the attributes of one picture. Returns a dict; render() and caption() consume it."""
    names = list(COLOURS)
    while True:
        fg, bg = rng.choice(names, size=2, replace=False).tolist()
        shape = SHAPES[rng.integers(len(SHAPES))]
        if allow_held_out or (fg, shape, bg) not in HELD_OUT:
            break
    size = ("small", "medium", "large")[rng.integers(3)]
    r = {"small": rng.uniform(8, 11), "medium": rng.uniform(13.5, 17), "large": rng.uniform(21, 26)}[size]
    margin = 2.0
    if size == "small":
        pos = POSITIONS[rng.integers(len(POSITIONS))]
        lo, hi = r + margin, SIZE - r - margin
        cx = lo + pos[1] * (hi - lo) + rng.uniform(-2, 2)
        cy = lo + pos[2] * (hi - lo) + rng.uniform(-2, 2)
        where = pos[0]
    else:
        # Medium/large shapes barely fit; keep them centred (with jitter) rather than invent positions.
        cx, cy = SIZE / 2 + rng.uniform(-3, 3), SIZE / 2 + rng.uniform(-3, 3)
        where = None
    return {"fg": fg, "bg": bg, "shape": shape, "size": size, "r": r, "cx": cx, "cy": cy, "where": where,
            "fg_rgb": jitter(COLOURS[fg], rng), "bg_rgb": jitter(COLOURS[bg], rng)}


def render(spec):
    """Flat-colour rendering used for the base model."""
    im = Image.new("RGB", (SIZE * SS, SIZE * SS), spec["bg_rgb"])
    draw_shape(ImageDraw.Draw(im), spec["shape"], spec["cx"], spec["cy"], spec["r"], spec["fg_rgb"])
    return im.resize((SIZE, SIZE), Image.BOX)


def caption(spec, rng=None):
    """Canonical caption, e.g. 'a small red circle at the top left on a blue background'.

    With an rng, a few variants are mixed in (no article, no background phrase, 'centre' spelling) so prompts a
    user types loosely still land on trained words.
    """
    size = "" if spec["size"] == "medium" else spec["size"] + " "
    where = f" {spec['where']}" if spec["where"] else ""
    bg = f" on {article(spec['bg'])} {spec['bg']} background"
    art = article(size + spec["fg"]) + " "
    if rng is not None:
        u = rng.random()
        if u < 0.10:
            bg = ""
        elif u < 0.20:
            art = ""
        if where == " in the center" and rng.random() < 0.3:
            where = " in the centre"
    return f"{art}{size}{spec['fg']} {spec['shape']}{where}{bg}"


def article(next_word):
    """'an orange', 'a red': users type proper English, so train on it."""
    return "an" if next_word[:1] in "aeiou" else "a"


def sample(rng, allow_held_out=False):
    """One (PIL image, caption) pair."""
    spec = sample_spec(rng, allow_held_out)
    return render(spec), caption(spec, rng)


def texture_augment(im, rng):
    """Overlay a random generic texture (stripes, dots, checks, outline) on a base picture.

    Used ONLY for VAE training: an autoencoder that has only seen flat colour fields cannot reconstruct
    textures, and then no style LoRA made of textures could ever show through it. Periods are 6-16 px on purpose:
    that's the range the 4x latent grid can represent.
    """
    arr = np.asarray(im).astype(np.float32)
    h = w = SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(4)
    period = rng.uniform(6, 16)
    if kind == 0:  # stripes at a random angle
        a = rng.uniform(0, math.pi)
        mask = (np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period) > 0)
    elif kind == 1:  # dot grid
        d = np.hypot((xx % period) - period / 2, (yy % period) - period / 2)
        mask = d < period * rng.uniform(0.2, 0.4)
    elif kind == 2:  # checks
        mask = ((xx // (period / 2)) + (yy // (period / 2))) % 2 == 0
    else:  # random soft blobs / noise at coarse scale
        n = rng.random((8, 8)).astype(np.float32)
        mask = np.asarray(Image.fromarray((n * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)) > 128
    colour = np.array(jitter(tuple(int(c) for c in rng.integers(0, 256, 3)), rng), dtype=np.float32)
    alpha = rng.uniform(0.3, 1.0)
    out = np.where(mask[..., None], arr * (1 - alpha) + colour * alpha, arr)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def vae_sample(rng):
    """Image for VAE training: base pictures, some with an outline, ~40% with a texture overlay."""
    spec = sample_spec(rng, allow_held_out=True)
    im = Image.new("RGB", (SIZE * SS, SIZE * SS), spec["bg_rgb"])
    outline = jitter(tuple(int(c) for c in rng.integers(0, 256, 3)), rng) if rng.random() < 0.3 else None
    draw_shape(ImageDraw.Draw(im), spec["shape"], spec["cx"], spec["cy"], spec["r"], spec["fg_rgb"],
               outline=outline, width=rng.uniform(1, 4))
    im = im.resize((SIZE, SIZE), Image.BOX)
    if rng.random() < 0.4:
        im = texture_augment(im, rng)
    return im
