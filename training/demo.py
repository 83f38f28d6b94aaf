"""Procedural test/demo data and the CLI's demo fallback (a tiny random model) for stripped checkouts."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from studio.runs import demo
from studio.runs.project import Project

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 80, 220),
           "yellow": (240, 210, 40), "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")


def draw_shapes(folder: Path, count: int, seed: int = 0, size: int = 64) -> Path:
    """Simple captioned shape images (`a red circle on a white background`) with .txt captions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = list(COLOURS)
    for i in range(count):
        fg, bg = rng.sample(names, 2)
        shape = rng.choice(SHAPES)
        im = Image.new("RGB", (size, size), COLOURS[bg])
        draw = ImageDraw.Draw(im)
        r = rng.randint(size // 5, size // 3)
        cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[fg])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[fg])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[fg])
        im.save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a {fg} {shape} on a {bg} background")
    return folder


def create_demo_project(out: Path | None = None) -> Project:
    """The bundled demo project; without the bundled assets, a tiny random model stands in."""
    if demo.assets_present():
        return demo.create_demo_project(out)
    from training import tiny_model

    root = Path(out or demo.default_location()).resolve()
    model, data = root / "tiny-model", root / "dataset"
    if not (model / "model_index.json").is_file():
        tiny_model.build(model)
    if not data.is_dir():
        draw_shapes(data, 24)
    return demo.create_demo_project(root, model, data)
