"""Deliverable check 1+2: load assets/pocket-model exactly like the app does (offline), time generation, and
measure prompt-following on HELD-OUT prompts (colour/shape combinations never in the training data).

    python -m scripts.pocket.check_model [--model assets/pocket-model] [--seeds 4] [--grid /tmp/pocket_check.png]
"""

from __future__ import annotations

import argparse
import json
import time

from scripts.pocket.common import MODEL_DIR, grid, setup_torch
from scripts.pocket.measure import analyse

torch = setup_torch()
from diffusers import StableDiffusionPipeline  # noqa: E402

# Held-out triples (shapes.HELD_OUT) + a few ordinary prompts with size/position words.
PROMPTS = [
    ("a red circle on a white background", "red", "circle", "white"),
    ("a blue square on a yellow background", "blue", "square", "yellow"),
    ("a green triangle on a pink background", "green", "triangle", "pink"),
    ("a yellow star on a blue background", "yellow", "star", "blue"),
    ("a purple diamond on an orange background", "purple", "diamond", "orange"),
    ("a white cross on a black background", "white", "cross", "black"),
    ("a large orange circle on a gray background", "orange", "circle", "gray"),
    ("a small black square at the top left on a cyan background", "black", "square", "cyan"),
]


def load(model):
    t = time.time()
    pipe = StableDiffusionPipeline.from_pretrained(
        str(model), safety_checker=None, feature_extractor=None, requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe, time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(MODEL_DIR))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--rescale", type=float, default=0.0, help="guidance_rescale (helps zero-SNR models)")
    ap.add_argument("--grid", default="/tmp/pocket_check.png")
    args = ap.parse_args()

    pipe, load_s = load(args.model)
    assert pipe.scheduler.config.prediction_type == "v_prediction", pipe.scheduler.config
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 16
    pipe("warm-up", height=64, width=64, num_inference_steps=2, output_type="pil")
    images, hits, times = [], {"bg": 0, "fg": 0, "shape": 0}, []
    rows = []
    for prompt, fg, shape, bg in PROMPTS:
        for seed in range(args.seeds):
            t = time.time()
            im = pipe(prompt, height=64, width=64, num_inference_steps=args.steps, guidance_scale=args.cfg,
                      guidance_rescale=args.rescale, generator=torch.Generator().manual_seed(seed)).images[0]
            times.append(time.time() - t)
            images.append(im)
            a = analyse(im)
            hits["bg"] += a["bg"] == bg
            hits["fg"] += a["fg"] == fg
            hits["shape"] += a["shape"] == shape
            rows.append({"prompt": prompt, "seed": seed, **a})
    n = len(images)
    grid(images, args.seeds, scale=3).save(args.grid)
    times.sort()
    report = {"load_s": round(load_s, 2), "median_gen_s": round(times[len(times) // 2], 3), "max_gen_s": round(times[-1], 3),
              "steps": args.steps, "cfg": args.cfg, "rescale": args.rescale, "images": n,
              "bg_colour_acc": round(hits["bg"] / n, 3), "fg_colour_acc": round(hits["fg"] / n, 3),
              "shape_acc": round(hits["shape"] / n, 3), "grid": args.grid}
    for r in rows:
        print(json.dumps(r))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
