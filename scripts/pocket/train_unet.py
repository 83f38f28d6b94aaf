"""Stage 2: train the pocket UNet2DConditionModel and CLIPTextModel jointly, then save the full pipeline.

Key choices (from a study on the 2-core reference machine, see README.md):
- v-prediction + zero-terminal-SNR (linear betas rescaled so the last step is pure noise, 'trailing' spacing).
  With SD1.5's epsilon / scaled_linear schedule the final step still leaks the input's mean colour, so the
  background colour of samples followed the seed, not the prompt. With zero terminal SNR the model must take
  the background colour from the text.
- Text encoder trained from scratch alongside the UNet: there is no pretrained CLIP offline, and a random
  frozen one gives the UNet nothing stable to read.
- Data: a seeded pool of pictures (shapes.py) encoded once by the frozen stage-1 VAE; captions re-drawn per use.
- EMA of the weights for sampling: a short run on CPU cannot decay the LR far enough for clean samples alone.

    python -m scripts.pocket.train_unet --steps 6000                      # stage 2
    python -m scripts.pocket.train_unet --init DIR --distract 0.35 ...   # robust stage, see train_model.py
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from scripts.pocket import print_styles, shapes
from scripts.pocket.common import SEED, WORK_DIR, setup_torch, to_tensor
from scripts.pocket.tokenizer import EXTRA_WORDS

torch = setup_torch()
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

# Zero-terminal-SNR v-prediction schedule. Stored as DDIMScheduler (what the pipeline samples with); the
# training engine rebuilds it with DDPMScheduler.from_config, which reads the same keys.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
    prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)


def unet_config(cross_dim, channels=(32, 64, 64)):
    # 16x16 latents -> 3 levels (16, 8, 4). Attention at 16 and 8: that's where shape and position are decided.
    # attention_head_dim=1 means ONE head (diffusers reads it as the head count): one wide head learned faster
    # than several narrow ones in the study.
    return dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=tuple(channels),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim, attention_head_dim=1, norm_num_groups=32,
    )


def text_config(tokenizer):
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def encode_text(tokenizer, text_encoder, captions):
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids)[0]  # no attention mask: StableDiffusionPipeline doesn't pass one either


def build_pool(vae, n, seed, styled=0.0):
    """Draw n pictures and encode them once with the frozen VAE (latent mean * scaling_factor).

    Pre-encoding removes the VAE encoder (~25 % of a step on CPU) from the loop. Captions are NOT fixed: we keep
    each picture's attribute spec and re-draw its caption variant every time it is used.
    """
    rng = np.random.default_rng(seed)
    specs = [shapes.sample_spec(rng) for _ in range(n)]
    pictures = [shapes.render(s) for s in specs]
    if styled > 0:  # the styles stage: a share of the pool in a random printed look (print_styles.py)
        srng = np.random.default_rng(seed + 1)
        for i in np.flatnonzero(srng.random(n) < styled):
            pictures[i], specs[i]["words"] = print_styles.render_styled(specs[i], srng)
    lat = []
    with torch.no_grad():
        for i in range(0, n, 128):
            x = to_tensor(pictures[i:i + 128])
            lat.append(vae.encode(x).latent_dist.mode() * vae.config.scaling_factor)
    return specs, torch.cat(lat)


# Words the base captions never use. Stage 3 sprinkles them (and made-up words) into captions so that an
# unknown word in a prompt, e.g. a LoRA trigger like "zxqstyle, ...", is ignored instead of derailing the image.
# Real SD's text encoder has seen every kind of word; ours hasn't, and without this stage a trigger word alone
# turned the base model's samples into noise. The demo trigger itself is NOT used: it stays unseen, like a real one.
DISTRACTORS = [w for w in EXTRA_WORDS
               if w not in {"a", "an", "the", "on", "in", "at", "small", "large", "left", "right", "top", "bottom",
                            "center", "centre", "background", "zxqstyle"} | set(shapes.COLOURS) | set(shapes.SHAPES)]
# In the styles stage the style words mean something, so they are no longer distractors.
STYLE_WORDS = {"dotted", "halftone", "striped", "outlined"}
DISTRACTORS_STYLED = [w for w in DISTRACTORS if w not in STYLE_WORDS]


def distract(cap, rng, words=DISTRACTORS):
    letters = "abcdefghijklmnopqrstuvwxyz"
    word = (words[rng.integers(len(words))] if rng.random() < 0.5
            else "".join(letters[i] for i in rng.integers(0, 26, rng.integers(4, 10))))
    u = rng.random()
    if u < 0.5 or not cap:
        return f"{word}, {cap}" if cap else word
    if u < 0.75:
        return f"{cap}, {word}"
    parts = cap.split()
    parts.insert(int(rng.integers(0, len(parts) + 1)), word)
    return " ".join(parts)


def make_batch(rng, specs, latents, n, drop=0.1, distract_p=0.0, words=DISTRACTORS):
    idx = rng.integers(0, len(specs), n)
    caps = ["" if rng.random() < drop else shapes.caption(specs[i], rng) for i in idx]  # "" trains CFG's branch
    caps = [print_styles.styled_caption(c, specs[i]["words"]) if "words" in specs[i] else c
            for c, i in zip(caps, idx)]
    if distract_p > 0:  # guarded so stage 2 draws exactly the same random numbers as without this feature
        caps = [distract(c, rng, words) if rng.random() < distract_p else c for c in caps]
    return latents[torch.from_numpy(idx)], caps


def ema_update(ema, model, decay):
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def save_pipeline(out, vae, unet, text_encoder, tokenizer, tokenizer_dir):
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    # transformers 5 writes only tokenizer.json; keep CLIP's vocab.json + merges.txt too (other tools, transformers
    # 4, and the slow tokenizer read those).
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(Path(tokenizer_dir) / name, Path(out) / "tokenizer" / name)
    return pipe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--vae", default=str(WORK_DIR / "vae"))
    ap.add_argument("--tokenizer", default=str(WORK_DIR / "tokenizer"))
    ap.add_argument("--out", default=str(WORK_DIR / "pipeline"))
    ap.add_argument("--ckpt-every", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=40000, help="pictures pre-encoded to latents")
    ap.add_argument("--channels", type=int, nargs=3, default=[32, 64, 64])
    ap.add_argument("--stop-at", type=int, default=0, help="end early at this step (LR schedule still for --steps)")
    ap.add_argument("--init", default="", help="continue from this saved pipeline (stage 3)")
    ap.add_argument("--distract", type=float, default=0.0, help="share of captions given an unknown word")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--styled", type=float, default=0.0,
                    help="share of the pool drawn in a random printed look (the styles stage)")
    ap.add_argument("--bench", type=int, default=0, help="time N steps and exit")
    args = ap.parse_args()

    torch.manual_seed(SEED)
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer, model_max_length=77)
    vae = AutoencoderKL.from_pretrained(args.vae).eval().requires_grad_(False)
    sf = vae.config.scaling_factor
    if args.init:
        text_encoder = CLIPTextModel.from_pretrained(args.init, subfolder="text_encoder")
        unet = UNet2DConditionModel.from_pretrained(args.init, subfolder="unet")
    else:
        text_encoder = CLIPTextModel(text_config(tokenizer))
        unet = UNet2DConditionModel(**unet_config(text_encoder.config.hidden_size, args.channels))
    unet.train()
    text_encoder.train()
    noise_scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)  # same path as the training engine
    n_unet = sum(p.numel() for p in unet.parameters())
    n_te = sum(p.numel() for p in text_encoder.parameters())
    print(f"UNet {n_unet / 1e6:.3f} M, text encoder {n_te / 1e6:.3f} M, latent scale {sf:.4f}", flush=True)

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    warm = args.warmup
    # Cosine to 5 % of the peak: most of the quality of a short run comes from the low-LR tail.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    ema_unet, ema_te = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)

    t_pool = time.time()
    specs, pool = build_pool(vae, args.pool, SEED + 1, args.styled)
    print(f"encoded {len(specs)} pictures in {time.time() - t_pool:.0f}s", flush=True)
    rng = np.random.default_rng(SEED + 4)
    # Fixed eval batch (own seed, fixed noise and timesteps) so the printed loss is comparable across steps.
    especs, epool = build_pool(vae, 128, SEED + 2)
    elat, ecaps = epool, [shapes.caption(sp) for sp in especs]
    g = torch.Generator().manual_seed(SEED + 3)
    enoise = torch.randn(elat.shape, generator=g)
    et = torch.randint(0, 1000, (len(elat),), generator=g)
    etarget = noise_scheduler.get_velocity(elat, enoise, et)
    enoisy = noise_scheduler.add_noise(elat, enoise, et)

    def eval_loss(u, te):
        with torch.no_grad():
            pred = torch.cat([u(enoisy[i:i + 64], et[i:i + 64], encode_text(tokenizer, te, ecaps[i:i + 64])).sample
                              for i in range(0, 128, 64)])
        return torch.nn.functional.mse_loss(pred, etarget).item()

    log = []
    t0 = time.time()
    run = 0.0
    for step in range(1, (args.bench or args.steps) + 1):
        lat, caps = make_batch(rng, specs, pool, args.batch, distract_p=args.distract,
                                words=DISTRACTORS_STYLED if args.styled else DISTRACTORS)
        noise = torch.randn_like(lat)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(lat),))
        noisy = noise_scheduler.add_noise(lat, noise, t)
        target = noise_scheduler.get_velocity(lat, noise, t)
        pred = unet(noisy, t, encode_text(tokenizer, text_encoder, caps)).sample
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        # EMA warm-up: early weights are garbage, so start with a short memory and grow it.
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_te, text_encoder, decay)
        run = 0.98 * run + 0.02 * loss.item() if step > 1 else loss.item()
        if args.bench and step == args.bench:
            print(f"bench: {(time.time() - t0) / step:.3f} s/step at batch {args.batch}", flush=True)
            return
        if step % 500 == 0 or step == args.steps or step == args.stop_at:
            rec = {"step": step, "train_loss_avg": round(run, 4), "eval_loss": round(eval_loss(unet, text_encoder), 4),
                   "eval_loss_ema": round(eval_loss(ema_unet, ema_te), 4), "lr": sched.get_last_lr()[0],
                   "seconds": round(time.time() - t0)}
            log.append(rec)
            print(json.dumps(rec), flush=True)
        last = step == args.steps or step == args.stop_at
        if step % args.ckpt_every == 0 or last:
            save_pipeline(args.out, vae, ema_unet, ema_te, tokenizer, args.tokenizer)
            (Path(args.out) / "train_log.json").write_text(json.dumps(
                {"unet_params": n_unet, "text_encoder_params": n_te, "steps_done": step, "batch": args.batch,
                 "seed": SEED, "log": log}, indent=1))
        if last:
            break


if __name__ == "__main__":
    main()
