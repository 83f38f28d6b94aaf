"""Check that the demo style survives the pocket VAE (encode -> decode), before any LoRA is trained on it.

If the VAE can't reproduce the dots and outlines, no LoRA can generate them: they'd be lost in the latents.
Reports PSNR and how much of the fine texture energy (image minus its 5x5 blur) the round trip keeps, and
writes a before/after grid (rows alternate original / reconstruction).

    python -m scripts.pocket.check_style [--vae assets/pocket-model/vae] [--style assets/demo-style]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from scripts.pocket.common import MODEL_DIR, STYLE_DIR, grid, psnr, setup_torch, to_pil, to_tensor

torch = setup_torch()
from diffusers import AutoencoderKL  # noqa: E402


def texture_energy(x):
    """Mean |x - blur(x)|: the part of the image a blurry autoencoder would lose (dots, outlines)."""
    blur = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    return (x - blur).abs().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vae", default=str(MODEL_DIR / "vae"))
    ap.add_argument("--style", default=str(STYLE_DIR))
    ap.add_argument("--grid", default="/tmp/pocket_style_roundtrip.png")
    args = ap.parse_args()
    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    files = sorted(Path(args.style).glob("*.png"))
    x = to_tensor([Image.open(f).convert("RGB") for f in files])
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    ims, recs = to_pil(x[:16]), to_pil(rec[:16])
    grid(ims[:8] + recs[:8] + ims[8:] + recs[8:], 8, scale=3).save(args.grid)
    print(json.dumps({"images": len(files), "psnr_db": round(psnr(rec, x), 2),
                      "texture_energy_orig": round(texture_energy(x), 4),
                      "texture_energy_rec": round(texture_energy(rec), 4),
                      "texture_kept": round(texture_energy(rec) / texture_energy(x), 3), "grid": args.grid}))


if __name__ == "__main__":
    main()
