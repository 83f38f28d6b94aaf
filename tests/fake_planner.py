"""The fake worker's memory planner (`tests/fake_worker.py plan-memory ...`), for GUI tests.

`plan-memory PROJECT --json --gpu-gb N [--config FILE] [--no-fit]` plays training/memory_plan.py:
the same settings (studio.machine.memory_fit.project_settings), a plan made of studio.machine.memory_fit
dataclasses from a simple rule (fixed weights, activations growing with batch and pixels,
checkpointing keeping 30 %, a quantized base halving or quartering the weights), cached in
PROJECT/cache/memory/ as the real one does, the real fit search over it, and one JSON line.

    FAKE_PLAN_DELAY        seconds before the answer (default 0.2)
    FAKE_PLAN_WEIGHTS_GIB  the frozen UNet's GiB (default 2; 20 makes only a quantized base fit)
    FAKE_PLAN_SAMPLING_GIB a sample's peak GiB (default 2.5)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def plan_memory() -> int:
    """The memory planner's stand-in: see the module docstring."""
    import hashlib

    from studio import atomic, config
    from studio.machine import memory_fit
    from studio.dataset import scanner
    from studio.runs.project import Project

    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("project", type=Path)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--gpu-gb", type=float)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--no-fit", action="store_true")
    args = parser.parse_args()
    time.sleep(float(os.environ.get("FAKE_PLAN_DELAY", "0.2")))
    project = Project(args.project)
    cfg = project.load_config()
    if args.config:
        cfg = config.load(args.config, cfg)
    items = scanner.scan(project.resolve(cfg.dataset_dir), cfg.exclude_images,
                         cfg.repeats).training_items()
    s = memory_fit.project_settings(cfg, project.root, items)
    gib = 2**30
    weights_gib = float(os.environ.get("FAKE_PLAN_WEIGHTS_GIB", "2"))

    def predict(c: memory_fit.MemorySettings) -> memory_fit.Plan:
        share = {"none": 1, "fp8": 2, "int8": 2, "nf4": 4}[c.quantization]
        weights = int(weights_gib * gib / share)
        act = int(3 * gib * c.batch_size * c.width * c.height / 512**2
                  * (0.3 if c.gradient_checkpointing else 1))
        sampling = float(os.environ.get("FAKE_PLAN_SAMPLING_GIB", "2.5"))
        plan = memory_fit.Plan(weights + act, gib, int(sampling * gib) if c.sample_size else 0,
                               {"weights": weights, "activations": act}, c, act)
        key = hashlib.sha256(json.dumps(c.to_json(), sort_keys=True).encode()).hexdigest()[:24]
        path = project.cache / "memory" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(plan.to_json()))
        return plan

    plan = predict(s)
    card = int(args.gpu_gb * gib) if args.gpu_gb else 0
    out = {"plan": plan.to_json(), "gpu_bytes": card or None,
           "fits": memory_fit.fits(plan, card) if card else None, "fit": None}
    if card and not args.no_fit:
        found = memory_fit.fit(s, card, predict)
        out["fit"] = found.to_json()
    print("INFO predicting GPU memory on fake tensors", file=sys.stderr, flush=True)
    print(json.dumps(out), flush=True)
    return 0
