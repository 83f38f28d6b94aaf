"""Stage 1b: fine-tune only the pocket VAE's decoder on printed-looking pictures (issue 14).

Why the decoder only: the UNet was trained on this VAE's latents; a new encoder would move the latent space
and break it, a new decoder keeps every latent meaning the same and only draws it better. Stable Diffusion's
own "ft-MSE" VAE was made the same way (decoder-only fine-tune, stabilityai/sd-vae-ft-mse model card).
Why: the 2200-step VAE shifted muted colours (cream came back pinkish) and kept ~2/3 of the fine texture
energy of halftone dots and outlines, so even a perfect LoRA could not show the demo style cleanly.

The data is generic "print" pictures: random muted inks (not the demo's palette), dark outlines 2-4 px,
halftone dots at a random period (8-16 px), phase, radius and shade, mixed 50/50 with the stage-1 pictures
(`shapes.vae_sample`) so the base pictures are drawn as well as before. The demo style set is never shown.

    python -m scripts.pocket.tune_decoder --steps 1500 --vae assets/pocket-model/vae --out /tmp/pocket/vae_ft
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from PIL import Image, ImageDraw

from scripts.pocket import shapes
from scripts.pocket.common import MODEL_DIR, SEED, WORK_DIR, psnr, setup_torch, to_tensor

torch = setup_torch()
from diffusers import AutoencoderKL  # noqa: E402  (after the thread setup on purpose)


def muted_ink(rng) -> tuple[int, int, int]:
    """A random ink, often desaturated or pale, the colours printed styles use."""
    rgb = rng.integers(0, 256, 3).astype(np.float32)
    grey = rgb.mean()
    rgb = grey + (rgb - grey) * rng.uniform(0.3, 1.0)
    return tuple(int(c) for c in np.clip(rgb, 0, 255))


def print_sample(rng) -> Image.Image:
    """A shape with an outline on a halftone (or flat) ground, in random muted inks."""
    s = shapes.SIZE * shapes.SS
    spec = shapes.sample_spec(rng, allow_held_out=True)
    bg = np.array(muted_ink(rng), np.float32)
    if rng.random() < 0.8:
        period, phase = rng.uniform(8, 16), rng.uniform(0, 16)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / shapes.SS
        d = np.hypot((xx + phase) % period - period / 2, (yy + phase) % period - period / 2)
        dots = d < period * rng.uniform(0.18, 0.34)
        arr = np.where(dots[..., None], bg * rng.uniform(0.55, 0.85), bg)
    else:
        arr = np.broadcast_to(bg, (s, s, 3))
    im = Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8))
    outline = tuple(int(c) for c in rng.integers(10, 70, 3))
    shapes.draw_shape(ImageDraw.Draw(im), spec["shape"], spec["cx"], spec["cy"], spec["r"], muted_ink(rng),
                      outline=outline, width=rng.uniform(2, 4))
    return im.resize((shapes.SIZE, shapes.SIZE), Image.BOX)


def batch(rng, n):
    return to_tensor([print_sample(rng) if rng.random() < 0.5 else shapes.vae_sample(rng) for _ in range(n)])


@torch.no_grad()
def roundtrip_psnr(vae, x):
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
    return psnr(rec, x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--vae", default=str(MODEL_DIR / "vae"))
    ap.add_argument("--out", default=str(WORK_DIR / "vae_ft"))
    args = ap.parse_args()

    vae = AutoencoderKL.from_pretrained(args.vae)
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / args.steps))
    eval_rng = np.random.default_rng(SEED + 4242)
    x_print = to_tensor([print_sample(eval_rng) for _ in range(64)])
    x_base = to_tensor([shapes.vae_sample(eval_rng) for _ in range(64)])
    before = {"print_db": roundtrip_psnr(vae.eval(), x_print), "base_db": roundtrip_psnr(vae, x_base)}
    print(json.dumps({"before": before}), flush=True)
    rng = np.random.default_rng(SEED + 77)
    vae.train()
    t0 = time.time()
    for step in range(1, args.steps + 1):
        x = batch(rng, args.batch)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()  # the latents the UNet was trained on, noise included
        rec = vae.decode(z).sample
        loss = torch.nn.functional.mse_loss(rec, x) + 0.5 * torch.nn.functional.l1_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps:
            vae.eval()
            p, b = roundtrip_psnr(vae, x_print), roundtrip_psnr(vae, x_base)
            vae.train()
            print(f"step {step} loss {loss.item():.4f} print {p:.2f} dB base {b:.2f} dB {time.time() - t0:.0f}s",
                  flush=True)
    vae.eval()
    after = {"print_db": roundtrip_psnr(vae, x_print), "base_db": roundtrip_psnr(vae, x_base)}
    vae.save_pretrained(args.out, safe_serialization=True)
    print(json.dumps({"steps": args.steps, "seconds": round(time.time() - t0), "before": before, "after": after}))


if __name__ == "__main__":
    main()
