"""The demo project: the bundled pocket model and demo style set, with the preset tuned for them.

When the bundled assets are missing (a stripped checkout), a tiny random model and a procedurally
drawn dataset stand in, so the demo still shows the whole pipeline end to end.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

from studio import config
from studio.project import Project

ASSETS = Path(__file__).resolve().parent.parent / "assets"
POCKET_MODEL = ASSETS / "pocket-model"
DEMO_STYLE = ASSETS / "demo-style"
DEMO_PRESET = ASSETS / "presets" / "demo.toml"

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
    """Create (or refresh the settings of) the demo project and return it."""
    if out is None:
        import platformdirs
        out = platformdirs.user_data_path("LoRA Studio", appauthor=False) / "demo-project"
    project = Project(Path(out).resolve())
    project.root.mkdir(parents=True, exist_ok=True)
    if (POCKET_MODEL / "model_index.json").is_file() and any(DEMO_STYLE.glob("*.png")):
        model, data = str(POCKET_MODEL), str(DEMO_STYLE)
    else:
        from training import tiny_model
        model_dir = project.root / "tiny-model"
        if not (model_dir / "model_index.json").is_file():
            shutil.rmtree(model_dir, ignore_errors=True)
            tiny_model.build(model_dir)
        data_dir = project.root / "dataset"
        if not data_dir.is_dir():
            draw_shapes(data_dir, 24)
        model, data = str(model_dir), str(data_dir)
    cfg = config.TrainConfig()
    if DEMO_PRESET.is_file():
        cfg = config.load(DEMO_PRESET, cfg)
    else:
        cfg = config.from_dict(dict(resolution=64, rank=8, alpha=8.0, max_steps=150,
                                    batch_size=4, learning_rate=1e-3, output_name="demo-style"))
    project.save_config(config.from_dict(dict(base_model=model, dataset_dir=data), cfg))
    return project
