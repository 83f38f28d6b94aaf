"""Does training transfer a style? The demo LoRA on the pocket model, judged on held-out prompts.

Trains the demo preset through the real CLI (`python -m training train`) on a fresh demo project,
then generates held-out prompts (palette colour/shape combinations that no caption of
assets/demo-style uses) with and without the LoRA over the same seeds, and prints the style
distance to the style set (benchmarks/style_metrics.py: colour histogram, texture/edge energy,
random-net Gram matrices; `combined` = their mean) and prompt adherence (background/foreground
colour correct, %).  Pass (issue 14's bar): combined distance ratio with/without <= 0.30 and
adherence within 5 points of the base model.

    .venv/bin/python benchmarks/style_learning.py                  # 12 prompts x 4 seeds
    .venv/bin/python benchmarks/style_learning.py --quick          # 6 prompts x 2 seeds (the test)
    .venv/bin/python benchmarks/style_learning.py --set max_steps=300 --set learning_rate=2e-3
    .venv/bin/python benchmarks/style_learning.py --lora FILE      # judge an existing LoRA
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import ROOT  # noqa: F401  (puts the repository on sys.path, offline env)

import torch  # noqa: E402

from benchmarks import style_metrics as sm  # noqa: E402
from studio.runs.demo import DEMO_STYLE, POCKET_MODEL, create_demo_project  # noqa: E402

TRIGGER = "zxqstyle"
PASS_RATIO, PASS_DROP = 0.30, 5.0  # issue 14: style distance <= 0.30 of the base's, colour within 5
INKS = ("red", "yellow", "blue", "white")
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
CAPTION = re.compile(r"a (?:small |large )?(\w+) (\w+)\b.* on a (\w+) background")


def held_out_prompts(n: int, style_dir: Path = DEMO_STYLE) -> list[tuple[str, str, str]]:
    """n (prompt, fg, bg): palette combinations absent from the style set's captions, in a fixed
    order that spreads shapes and colour pairs."""
    seen = set()
    for txt in Path(style_dir).glob("*.txt"):
        m = CAPTION.search(txt.read_text())
        if m:
            seen.add(m.groups())
    combos = [(fg, shape, bg) for shape in SHAPES for fg in INKS for bg in INKS
              if fg != bg and (fg, shape, bg) not in seen]
    # Interleave: round-robin over shapes so that a small n still covers several shapes.
    by_shape = [[c for c in combos if c[1] == s] for s in SHAPES]
    order = [lst[i] for i in range(max(map(len, by_shape))) for lst in by_shape if i < len(lst)]
    return [(f"{TRIGGER}, a {fg} {shape} on a {bg} background", fg, bg) for fg, shape, bg in order[:n]]


def train(project: Path, overrides: list[str], timeout: float = 600) -> tuple[Path, float]:
    """Train through the CLI like the GUI does; -> (LoRA file, wall seconds)."""
    cmd = [sys.executable, "-m", "training", "train", str(project)]
    for kv in overrides:
        cmd += ["--set", kv]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - t0
    done = [e for e in map(json.loads, proc.stdout.splitlines()) if e.get("event") == "done"]
    if proc.returncode != 0 or not done:
        raise RuntimeError(f"training failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return Path(done[-1]["path"]), seconds


def generate(gen, prompts, seeds, lora, args):
    from studio.protocol import GenerateRequest

    gen.set_adapters([(lora, args.strength)] if lora else [])
    out = []
    for prompt, _, _ in prompts:
        for seed in seeds:
            req = GenerateRequest(prompt=prompt, seed=seed, steps=args.steps, cfg_scale=args.cfg,
                                  width=64, height=64, sampler=args.sampler, count=1)
            out += [im for _, _, im, _ in gen.generate(req)]
    return out


def evaluate(lora: Path, args) -> dict:
    from training.generate import Generator

    prompts = held_out_prompts(args.prompts, args.style_dir)
    seeds = [args.seed + i for i in range(args.seeds)]
    gen = Generator.load(str(args.model), device="cpu")
    t0 = time.monotonic()
    base = generate(gen, prompts, seeds, None, args)
    styled = generate(gen, prompts, seeds, lora, args)
    gen_s = time.monotonic() - t0
    ref = sm.StyleReference(sm.load_images(args.style_dir), seed=0)
    specs = [(fg, bg) for _, fg, bg in prompts for _ in seeds]
    d0, d1 = ref.distance(base), ref.distance(styled)
    a0, a1 = sm.adherence(base, specs), sm.adherence(styled, specs)
    result = {
        "prompts": len(prompts), "seeds": len(seeds), "images": len(base), "sampler": args.sampler,
        "steps": args.steps, "cfg": args.cfg, "strength": args.strength, "gen_s": round(gen_s, 1),
        "distance_without": {k: round(v, 4) for k, v in d0.items()},
        "distance_with": {k: round(v, 4) for k, v in d1.items()},
        "ratio": {k: round(d1[k] / d0[k], 3) if d0[k] else None for k in d0},
        "adherence_without": a0, "adherence_with": a1,
        "adherence_drop": round(a0["both"] - a1["both"], 1),
    }
    result["pass"] = (result["ratio"]["combined"] <= PASS_RATIO
                      and result["adherence_drop"] <= PASS_DROP)
    if args.grid:
        grid_image(prompts, seeds, base, styled).save(args.grid)
        result["grid"] = str(args.grid)
    return result


def grid_image(prompts, seeds, base, styled):
    """Rows: held-out prompts; columns: each seed without, then with the LoRA (64 px cells x2)."""
    from PIL import Image

    from studio.grid import compose

    big = [im.resize((128, 128), Image.NEAREST) for im in base]
    big_l = [im.resize((128, 128), Image.NEAREST) for im in styled]
    n = len(seeds)
    cells = [big[i * n:(i + 1) * n] + big_l[i * n:(i + 1) * n] for i in range(len(prompts))]
    cols = [f"base s{s}" for s in seeds] + [f"LoRA s{s}" for s in seeds]
    rows = [p.split(", ", 1)[1].removeprefix("a ").replace(" on a ", " on ").removesuffix(" background")
            for p, _, _ in prompts]
    return compose(cells, rows, cols, title="held-out prompts: without | with the demo LoRA")


def table(r: dict) -> str:
    lines = ["| metric | without LoRA | with LoRA | with/without |", "|---|---|---|---|"]
    for k in ("colour", "texture", "gram", "combined"):
        lines.append(f"| style distance: {k} | {r['distance_without'][k]:.4f} | "
                     f"{r['distance_with'][k]:.4f} | {r['ratio'][k]} |")
    for k in ("bg", "fg", "both"):
        lines.append(f"| adherence {k} colour % | {r['adherence_without'][k]:.1f} | "
                     f"{r['adherence_with'][k]:.1f} | |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=12, help="held-out prompts (max 31)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per prompt")
    ap.add_argument("--seed", type=int, default=100, help="first sampling seed")
    ap.add_argument("--steps", type=int, default=25, help="sampling steps")
    ap.add_argument("--cfg", type=float, default=2.5, help="guidance (the demo default)")
    ap.add_argument("--sampler", default="Euler")
    ap.add_argument("--strength", type=float, default=0.9, help="LoRA strength")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of the demo preset for training")
    ap.add_argument("--lora", type=Path, help="judge this LoRA instead of training one")
    ap.add_argument("--grid", type=Path, help="save a labelled grid PNG here")
    ap.add_argument("--style-dir", type=Path, default=DEMO_STYLE,
                    help="style set to train on and compare with (default: the demo's)")
    ap.add_argument("--model", type=Path, default=POCKET_MODEL,
                    help="base model (default: the pocket model; a rebuilt one to compare)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="6 prompts x 2 seeds")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.seeds = min(args.prompts, 6), min(args.seeds, 2)
    torch.set_num_threads(args.threads)
    info = {"machine": {"threads": args.threads, "torch": torch.__version__}}
    print(json.dumps(info), flush=True)
    with tempfile.TemporaryDirectory(prefix="style-bench-") as tmp:
        lora, train_s = args.lora, None
        if lora is None:
            project = create_demo_project(Path(tmp) / "demo", model=args.model,
                                          dataset=args.style_dir).root
            lora, train_s = train(project, args.set)
        result = evaluate(Path(lora), args)
    result = {"case": "style_learning", "train_s": round(train_s, 1) if train_s else None,
              "overrides": args.set, **result}
    print(json.dumps(result), flush=True)
    print(table(result))
    print(f"\ntraining {result['train_s']} s; combined ratio {result['ratio']['combined']} "
          f"(pass <= {PASS_RATIO}); adherence drop {result['adherence_drop']} points "
          f"(pass <= {PASS_DROP}): "
          f"{'PASS' if result['pass'] else 'FAIL'}")
    return result


if __name__ == "__main__":
    main()
