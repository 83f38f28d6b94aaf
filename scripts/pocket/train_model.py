"""Build the pocket model end to end, reproducibly from the fixed seed (common.SEED):

    python -m scripts.pocket.train_model   # tokenizer -> VAE -> UNet+TE -> robust -> decoder -> styles -> export
    python -m scripts.pocket.train_model --stage robust --stage export    # resume after a finished stage

Each stage is its own subprocess (one torch thread each, run one after the other, never in parallel) and leaves
its result under WORK_DIR (/tmp/pocket by default), so a failed later stage doesn't cost the earlier ones.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scripts.pocket.common import MODEL_DIR, ROOT, WORK_DIR

STAGES = ("tokenizer", "vae", "unet", "robust", "decoder", "styles", "export")


def run(module, *args):
    t = time.time()
    subprocess.run([sys.executable, "-m", f"scripts.pocket.{module}", *args], cwd=ROOT, check=True)
    return round(time.time() - t, 1)


def export(src: Path, dst: Path, vae: Path | None = None):
    """Copy the saved pipeline into the repo, minus training-only files, with the fine-tuned VAE if
    given, and sanity-check the layout."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("train_log.json"))
    if vae is not None:
        shutil.rmtree(dst / "vae")
        shutil.copytree(vae, dst / "vae")
    for f in dst.rglob("*.safetensors"):
        f.chmod(0o644)  # safetensors writes 0600 files; shipped assets must be readable by everyone
    index = json.loads((dst / "model_index.json").read_text())
    # Absent components must be [null, null] so from_pretrained doesn't look for folders that don't exist.
    for name in ("safety_checker", "feature_extractor", "image_encoder"):
        if name in index and index[name] != [None, None]:
            index[name] = [None, None]
    index["requires_safety_checker"] = False
    (dst / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (dst / sub).is_dir(), sub
    for f in ("vocab.json", "merges.txt"):
        assert (dst / "tokenizer" / f).exists(), f
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    print(f"exported to {dst}: {size / 1e6:.2f} MB")
    assert size <= 25e6, "pocket model must stay under 25 MB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", action="append", choices=STAGES, help="run only these stages (default: all)")
    ap.add_argument("--vae-steps", default="2200")
    ap.add_argument("--unet-steps", default="6000")
    args = ap.parse_args()
    stages = args.stage or STAGES
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    times = {}
    if "tokenizer" in stages:
        times["tokenizer"] = run("tokenizer", str(WORK_DIR / "tokenizer"))
    if "vae" in stages:
        times["vae"] = run("train_vae", "--steps", args.vae_steps, "--out", str(WORK_DIR / "vae"))
    if "unet" in stages:
        times["unet"] = run("train_unet", "--steps", args.unet_steps, "--vae", str(WORK_DIR / "vae"),
                            "--tokenizer", str(WORK_DIR / "tokenizer"), "--out", str(WORK_DIR / "pipeline_base"))
    if "robust" in stages:
        # Short continuation with unknown words sprinkled into captions (train_unet.distract), so a LoRA trigger
        # word in a prompt doesn't derail the base model. Low LR, short EMA, small pool: it's a touch-up.
        times["robust"] = run("train_unet", "--init", str(WORK_DIR / "pipeline_base"), "--steps", "800",
                              "--lr", "3e-4", "--warmup", "50", "--ema", "0.99", "--distract", "0.35",
                              "--pool", "10000", "--vae", str(WORK_DIR / "vae"),
                              "--tokenizer", str(WORK_DIR / "tokenizer"), "--out", str(WORK_DIR / "pipeline"))
    if "decoder" in stages:
        # Decoder-only fine-tune on generic printed pictures (tune_decoder.py): sharper dots and outlines,
        # truer muted inks; the encoder, and so every latent the UNet was trained on, stays the same.
        times["decoder"] = run("tune_decoder", "--steps", "1500", "--vae", str(WORK_DIR / "vae"),
                               "--out", str(WORK_DIR / "vae_ft"))
    if "styles" in stages:
        # The base model learns generic printed looks named by style words (print_styles.py), so a style LoRA
        # steers it towards a look it can draw instead of teaching a texture from scratch. Two runs: a gentle
        # one (a third of the pool styled), then a longer one at a higher LR (half styled).
        common = ["--ema", "0.99", "--distract", "0.3", "--pool", "12000", "--vae", str(WORK_DIR / "vae"),
                  "--tokenizer", str(WORK_DIR / "tokenizer")]
        times["styles"] = run("train_unet", "--init", str(WORK_DIR / "pipeline"), "--steps", "1200",
                              "--lr", "3e-4", "--warmup", "50", "--styled", "0.35", *common,
                              "--out", str(WORK_DIR / "pipeline_styled1"))
        times["styles"] += run("train_unet", "--init", str(WORK_DIR / "pipeline_styled1"), "--steps", "2400",
                               "--lr", "6e-4", "--warmup", "100", "--styled", "0.5", *common,
                               "--out", str(WORK_DIR / "pipeline_styled"))
    if "export" in stages:
        export(WORK_DIR / "pipeline_styled", MODEL_DIR, vae=WORK_DIR / "vae_ft")
    print(json.dumps({"stage_seconds": times}))


if __name__ == "__main__":
    main()
