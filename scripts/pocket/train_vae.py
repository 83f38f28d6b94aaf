"""Stage 1: train the pocket AutoencoderKL (64 px RGB <-> 16x16x4 latents).

Why 3 blocks: diffusers' vae_scale_factor = 2 ** (len(block_out_channels) - 1), so 3 blocks give SD's latent
layout (4 channels) at 4x downsampling. With SD's 8x a 64 px image is an 8x8 latent and shapes, outlines and
textures no longer fit; at 4x a 16x16 latent still holds them.

Loss: MSE + L1 on pixels and a tiny KL term (SD's VAE uses KL weight ~1e-6): we want a sharp autoencoder with a
roughly Gaussian latent, not a generative VAE. No GAN/perceptual loss: no pretrained nets are available offline,
and flat-colour pictures don't need them.

    python -m scripts.pocket.train_vae --steps 2200
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from scripts.pocket import shapes
from scripts.pocket.common import SEED, WORK_DIR, grid, psnr, setup_torch, to_pil, to_tensor

torch = setup_torch()
from diffusers import AutoencoderKL  # noqa: E402  (after the thread setup on purpose)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64), norm_num_groups=8,
)


def build_vae():
    torch.manual_seed(SEED)
    return AutoencoderKL(**VAE_CONFIG)


def eval_batch(n=256):
    """Fixed held-out evaluation set (own seed, never used for training). Half base pictures, half textured."""
    rng = np.random.default_rng(SEED + 999)
    ims = [shapes.sample(rng, allow_held_out=True)[0] for _ in range(n // 2)]
    ims += [shapes.vae_sample(rng) for _ in range(n - n // 2)]
    return to_tensor(ims)


@torch.no_grad()
def evaluate(vae, x):
    vae.eval()
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 64]).latent_dist.mode()).sample for i in range(0, len(x), 64)])
    vae.train()
    half = len(x) // 2
    return psnr(rec, x), psnr(rec[:half], x[:half]), psnr(rec[half:], x[half:]), rec


@torch.no_grad()
def latent_scaling_factor(vae, n=512):
    """SD scales latents by vae.config.scaling_factor so they have ~unit variance for the UNet: 1 / std."""
    rng = np.random.default_rng(SEED + 7)
    x = to_tensor([shapes.sample(rng)[0] for _ in range(n)])
    z = torch.cat([vae.encode(x[i:i + 64]).latent_dist.sample() for i in range(0, n, 64)])
    return 1.0 / z.std().item(), z.mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--out", default=str(WORK_DIR / "vae"))
    args = ap.parse_args()

    vae = build_vae()
    print(f"VAE params: {sum(p.numel() for p in vae.parameters()) / 1e6:.3f} M", flush=True)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    warm = 200
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    rng = np.random.default_rng(SEED)
    x_eval = eval_batch()
    t0 = time.time()
    for step in range(1, args.steps + 1):
        x = to_tensor([shapes.vae_sample(rng) if rng.random() < 0.5 else shapes.sample(rng)[0]
                       for _ in range(args.batch)])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss_rec = torch.nn.functional.mse_loss(rec, x) + 0.5 * torch.nn.functional.l1_loss(rec, x)
        loss = loss_rec + args.kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps:
            p_all, p_base, p_tex, _ = evaluate(vae, x_eval)
            print(f"step {step} loss {loss_rec.item():.4f} psnr {p_all:.2f} (base {p_base:.2f}, textured {p_tex:.2f})"
                  f" {time.time() - t0:.0f}s", flush=True)
    p_all, p_base, p_tex, rec = evaluate(vae, x_eval)
    sf, mean = latent_scaling_factor(vae)
    vae.register_to_config(scaling_factor=sf)
    vae.save_pretrained(args.out, safe_serialization=True)
    stats = {"steps": args.steps, "batch": args.batch, "seconds": round(time.time() - t0, 1),
             "psnr_db": round(p_all, 2), "psnr_base_db": round(p_base, 2), "psnr_textured_db": round(p_tex, 2),
             "scaling_factor": sf, "latent_mean": mean,
             "params": sum(p.numel() for p in vae.parameters())}
    (WORK_DIR / "vae_stats.json").write_text(json.dumps(stats, indent=2))
    pairs = [im for a, b in zip(to_pil(x_eval[120:136]), to_pil(rec[120:136])) for im in (a, b)]
    grid(pairs, 8, 2).save(WORK_DIR / "vae_roundtrip.png")
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
