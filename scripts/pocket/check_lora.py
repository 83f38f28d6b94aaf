"""Deliverable check 3: can a small LoRA learn the demo style on this CPU in minutes? (feasibility only; the
real engine lives in training/). Mirrors what the engine does: frozen VAE/TE, cached latents + text embeddings,
PEFT LoRA r=8 on the UNet attention projections, AdamW, v-prediction target from get_velocity.

Judged by numbers as well as eyes: distance of generated pixels to the style's palette, and fine texture energy
(dots + outlines), with the adapter on vs off, same prompts and seeds.

    python -m scripts.pocket.check_lora [--steps 150] [--grid /tmp/pocket_lora.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scripts.pocket.check_style import texture_energy
from scripts.pocket.common import MODEL_DIR, SEED, STYLE_DIR, grid, setup_torch, to_tensor
from scripts.pocket.demo_style import OUTLINE, PALETTE, shade

torch = setup_torch()
from diffusers import DDPMScheduler, StableDiffusionPipeline  # noqa: E402
from peft import LoraConfig  # noqa: E402

PROMPTS = ["zxqstyle, a red circle on a blue background", "zxqstyle, a yellow star on a white background",
           "zxqstyle, a blue square on a red background", "zxqstyle, a large white triangle on a yellow background",
           "zxqstyle, a green diamond on a pink background"]  # last one: colours outside the style's palette
INKS = np.array(list(PALETTE.values()) + [shade(c, 0.72) for c in PALETTE.values()] + [OUTLINE], np.float32)


def palette_distance(images):
    """Mean RGB distance from each pixel to the nearest style ink: low = drawn in the style's palette."""
    a = np.stack([np.asarray(im, np.float32) for im in images]).reshape(-1, 1, 3)
    return float(np.sqrt(((a - INKS[None]) ** 2).sum(-1)).min(1).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(MODEL_DIR))
    ap.add_argument("--style", default=str(STYLE_DIR))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--grid", default="/tmp/pocket_lora.png")
    args = ap.parse_args()

    t_all = time.time()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # as the engine does
    files = sorted(Path(args.style).glob("*.png"))
    caps = [f.with_suffix(".txt").read_text().strip() for f in files]

    t_cache = time.time()
    with torch.no_grad():
        lat = vae.encode(to_tensor([Image.open(f).convert("RGB") for f in files])).latent_dist.mode()
        lat = lat * vae.config.scaling_factor
        ids = tok(caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        emb = te(ids)[0]
    t_cache = time.time() - t_cache

    torch.manual_seed(SEED)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    rng = np.random.default_rng(SEED)
    losses = []
    unet.train()
    t_train = time.time()
    for _ in range(args.steps):
        idx = torch.from_numpy(rng.integers(0, len(files), args.batch))
        x0, c = lat[idx], emb[idx]
        noise = torch.randn_like(x0)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch,))
        pred = unet(noise_scheduler.add_noise(x0, noise, t), t, c).sample
        loss = torch.nn.functional.mse_loss(pred, noise_scheduler.get_velocity(x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    t_train = time.time() - t_train
    unet.eval()

    def generate():
        return [pipe(p, height=64, width=64, num_inference_steps=25, generator=torch.Generator().manual_seed(s)).images[0]
                for p in PROMPTS for s in range(args.seeds)]

    with_lora = generate()
    unet.disable_adapters()
    without = generate()
    unet.enable_adapters()
    ref = [Image.open(f).convert("RGB") for f in files]
    rows = []
    for i in range(len(PROMPTS)):
        rows += without[i * args.seeds:(i + 1) * args.seeds] + with_lora[i * args.seeds:(i + 1) * args.seeds]
    grid(rows, 2 * args.seeds, scale=3).save(args.grid)  # each row: base model | with LoRA, same seeds
    te_ = lambda ims: round(texture_energy(to_tensor(ims)), 4)  # noqa: E731
    print(json.dumps({
        "lora_params": sum(p.numel() for p in params), "steps": args.steps, "batch": args.batch,
        "cache_s": round(t_cache, 2), "train_s": round(t_train, 1), "total_s": round(time.time() - t_all, 1),
        "loss_first10": round(float(np.mean(losses[:10])), 4), "loss_last10": round(float(np.mean(losses[-10:])), 4),
        "palette_dist_base": round(palette_distance(without), 1), "palette_dist_lora": round(palette_distance(with_lora), 1),
        "palette_dist_dataset": round(palette_distance(ref), 1),
        "texture_base": te_(without), "texture_lora": te_(with_lora), "texture_dataset": te_(ref), "grid": args.grid}))


if __name__ == "__main__":
    main()
