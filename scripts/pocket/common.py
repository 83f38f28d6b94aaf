"""Small helpers shared by every pocket script: paths, seed, thread setup, image <-> tensor."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "assets" / "pocket-model"
STYLE_DIR = ROOT / "assets" / "demo-style"
# Intermediate checkpoints live outside the repo so half-trained weights never get committed.
WORK_DIR = Path(os.environ.get("POCKET_WORK_DIR", "/tmp/pocket"))
SEED = 1234
IMAGE_SIZE = 64


def setup_torch():
    """One thread, offline. On a 2-core machine two torch threads are 10-60x slower and erratic
    (machine-notes.md section 3), and the other core belongs to whoever else is working."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    return torch


def to_tensor(images):
    """List of PIL RGB images -> float tensor in [-1, 1], shape (N, 3, H, W), as SD's VAE expects."""
    import numpy as np
    import torch

    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images]).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).div(127.5).sub(1.0)


def to_pil(tensor):
    """(N, 3, H, W) in [-1, 1] -> list of PIL images."""
    import numpy as np
    from PIL import Image

    arr = tensor.detach().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def grid(images, cols, scale=1):
    """Paste equally sized PIL images into one grid (for eyeballing samples)."""
    from PIL import Image

    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    out = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        out.paste(im, ((i % cols) * w, (i // cols) * h))
    if scale != 1:
        out = out.resize((out.width * scale, out.height * scale), Image.NEAREST)
    return out


def psnr(a, b):
    """PSNR in dB between two [-1, 1] tensors (peak-to-peak range 2)."""
    import torch

    mse = torch.mean((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).item()
    return 10 * __import__("math").log10(4.0 / max(mse, 1e-12))
