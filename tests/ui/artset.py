"""A small, varied "artist's folder" for GUI tests and screenshots: coloured compositions of
several sizes and aspect ratios with tag captions, plus the usual problems (a duplicate, a
missing caption, an image smaller than the training size, a file that is not an image)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

PALETTES = [((233, 196, 106), (42, 157, 143), (38, 70, 83)),
            ((244, 162, 97), (231, 111, 81), (38, 70, 83)),
            ((142, 202, 230), (33, 158, 188), (2, 48, 71)),
            ((255, 183, 3), (251, 133, 0), (2, 48, 71)),
            ((205, 180, 219), (255, 200, 221), (162, 210, 255))]
SUBJECTS = ["mountain landscape", "portrait of a fox", "city street", "still life with fruit",
            "forest path", "lighthouse at dusk", "cat on a windowsill", "sailing boat"]
SIZES = [(768, 768), (640, 896), (896, 640), (1024, 768), (600, 900), (832, 832)]


def paint(size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    light, mid, dark = rng.choice(PALETTES)
    im = Image.new("RGB", size, light)
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(14):
        colour = rng.choice((mid, dark, light))
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randint(w // 12, w // 4)
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
    return im.filter(ImageFilter.GaussianBlur(2))


def make(folder: Path, n: int = 16, problems: bool = True, seed: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        size = SIZES[i % len(SIZES)]
        name = f"art_{i:03d}"
        paint(size, seed * 100 + i).save(folder / f"{name}.jpg", quality=88)
        subject = SUBJECTS[i % len(SUBJECTS)]
        tags = ["flat colours", "soft shapes", rng.choice(["warm light", "cool light"]), subject]
        rng.shuffle(tags)
        if not (problems and i == 2):  # art_002: no caption file
            (folder / f"{name}.txt").write_text(", ".join(tags), encoding="utf-8")
    if problems:
        shutil.copy(folder / "art_001.jpg", folder / "art_001_copy.jpg")  # a duplicate
        (folder / "art_001_copy.txt").write_text("flat colours, copy", encoding="utf-8")
        paint((320, 320), 99).save(folder / "small_sketch.png")  # smaller than 512 px
        (folder / "small_sketch.txt").write_text("sketch, small", encoding="utf-8")
        (folder / "notes.png").write_bytes(b"this is not really a png")  # cannot be decoded
    return folder


SD15_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"]}


def fake_model(folder: Path) -> Path:
    """The config files of an SD1.5 diffusers folder, without weights: enough for the model
    picker and the estimate (which fall back to the config), and nothing for a real worker."""
    import json

    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "text_encoder").mkdir(exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    (folder / "unet" / "config.json").write_text(json.dumps(SD15_UNET))
    (folder / "text_encoder" / "config.json").write_text(json.dumps(
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}))
    return folder
