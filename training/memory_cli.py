"""`python -m training plan-memory PROJECT`: the memory planner's report as text or one JSON line."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from studio.config import TrainConfig
from training.memory_plan import predict, project_settings


def runnable_quantizations() -> tuple[str, ...]:
    """The base quantizations "Fit to my GPU" may offer: those training/quantize.py can run on
    the device this machine trains on (NF4 needs CUDA and bitsandbytes, fp8 an Ada GPU, int8
    torchao), so a fit never picks a setting the run then refuses."""
    from training import quantize

    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    return quantize.runnable(device)


def report(project, cfg: TrainConfig, gpu_bytes: int | None, with_fit: bool = True) -> dict:
    """The plan for a project and, with `gpu_bytes`, whether it fits that card and (unless
    `with_fit` is False) the fastest settings that fit it (`python -m training plan-memory`;
    the Train tab shows the same)."""
    from studio.machine.memory_fit import fit, fits

    s = project_settings(project, cfg)
    plan = predict(s, project.cache)
    out = {"plan": plan.to_json(), "gpu_bytes": gpu_bytes, "fits": None, "fit": None}
    if gpu_bytes:
        out["fits"] = fits(plan, gpu_bytes)
    if gpu_bytes and with_fit:
        offered = runnable_quantizations()
        found = fit(s, gpu_bytes, lambda c: predict(c, project.cache), offered)
        out["fit"] = found.to_json(offered)
    return out


def to_text(r: dict) -> str:
    from studio.machine.memory_fit import nothing_fits

    def gib(n: int) -> str:
        return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

    p, s = r["plan"], r["plan"]["settings"]
    parts = ", ".join(f"{k.replace('_', ' ')} {gib(v)}" for k, v in p["parts"].items() if v)
    lines = [f"Predicted peak GPU memory: {gib(p['peak_bytes'])} ({p['limit']})",
             f"  model {s['model']}",
             f"  {s['width']}x{s['height']} px, batch {s['batch_size']}, rank {s['rank']}, "
             f"{s['precision']}, checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, "
             f"{s['optimizer']}, base {s['quantization']}",
             f"  training  {gib(p['training_bytes'])}  ({parts})",
             f"  caching   {gib(p['caching_bytes'])}  (VAE encoding {s['encode_batch']} images "
             f"at a time" + (f", {s['encode_width']}x{s['encode_height']} px"
                             if s.get("encode_width") else "") + ")",
             f"  sampling  {gib(p['sampling_bytes'])}" if s["sample_size"] else "  sampling  off",
             f"  the card needs {gib(p['needed_bytes'])} (peak + allocator slack + CUDA context)"]
    if r["gpu_bytes"] and r["fit"] is None:
        lines.append(f"On a {gib(r['gpu_bytes'])} card: " + ("fits." if r["fits"] else
                                                              "does not fit."))
    elif r["gpu_bytes"]:
        card = gib(r["gpu_bytes"])
        f = r["fit"]
        lines.append(f"Fit to my GPU ({card}): " + (
            "fits as set." if r["fits"] else
            "fits with " + ", ".join(f.get("set", [])) if f["ok"] else
            nothing_fits(f, r["gpu_bytes"], card, gib)))
        if f["ok"] and not r["fits"]:
            lines.append("  (python -m training train PROJECT " +
                         " ".join(f"--set {x}" for x in f["set"]) + ")")
    return "\n".join(lines)


def cli(project_dir: Path, config_file: Path | None, overrides: list[str],
        gpu_gb: float | None, as_json: bool, with_fit: bool = True) -> int:
    """`python -m training plan-memory PROJECT [--gpu-gb N] [--no-fit] [--json]`; exit 2 on
    bad input."""
    import sys

    from studio import config, dataset
    from studio.config import ConfigError
    from studio.runs.project import Project
    from training.check import device_info

    project = Project(project_dir.resolve())
    if not project.root.is_dir():
        print(f"Project folder not found: {project.root}", file=sys.stderr)
        return 2
    try:
        cfg = project.load_config()
        if config_file is not None:
            cfg = config.load(config_file, cfg)
        cfg = config.parse_overrides(overrides, cfg)
        gpu = int(gpu_gb * 2**30) if gpu_gb else device_info()["memory_bytes"] or None
        r = report(project, cfg, gpu, with_fit)
    except (ConfigError, dataset.DatasetError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(r) if as_json else to_text(r))  # JSON on one line, like the events
    return 0
