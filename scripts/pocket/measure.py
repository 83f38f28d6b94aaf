"""Crude, deterministic judges for generated 64 px pictures: which named colour is the background, which is the
foreground, and which of the six shapes the foreground blob best matches.

Why: "looks right to me" doesn't go in a report. These measure prompt-following on held-out prompts with
numbers, so a retrained model can be compared with this one. They assume ONE roughly centred shape on a flat
background (the base model's world); they are not general image classifiers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from scripts.pocket import shapes

NAMES = list(shapes.COLOURS)
RGB = np.array([shapes.COLOURS[n] for n in NAMES], np.float32)


def nearest_colour(rgb):
    return NAMES[int(np.argmin(((RGB - np.asarray(rgb, np.float32)) ** 2).sum(1)))]


def analyse(im):
    """-> dict(bg=name, fg=name, shape=name, iou=float) for one PIL image."""
    a = np.asarray(im.convert("RGB"), np.float32)
    border = np.concatenate([a[:3].reshape(-1, 3), a[-3:].reshape(-1, 3), a[:, :3].reshape(-1, 3), a[:, -3:].reshape(-1, 3)])
    bg = np.median(border, 0)
    dist = np.sqrt(((a - bg) ** 2).sum(-1))
    mask = dist > 60  # pixels clearly unlike the background = the subject
    out = {"bg": nearest_colour(bg), "fg": None, "shape": None, "iou": 0.0}
    if mask.sum() < 12:
        return out
    out["fg"] = nearest_colour(np.median(a[mask], 0))
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    half = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / 2
    best = (-1.0, None)
    for name in shapes.SHAPES:
        # Shapes differ in extent for the same "radius", so search a few radii around the bounding box size.
        for f in (0.9, 1.0, 1.1, 1.2):
            m = Image.new("L", (64, 64), 0)
            pts = shapes.polygon(name, cx, cy, half * f)
            (ImageDraw.Draw(m).ellipse if name == "circle" else ImageDraw.Draw(m).polygon)(pts, fill=255)
            t = np.asarray(m) > 127
            iou = (t & mask).sum() / max((t | mask).sum(), 1)
            if iou > best[0]:
                best = (iou, name)
    out["iou"], out["shape"] = round(float(best[0]), 3), best[1]
    return out
