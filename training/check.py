"""`python -m training check PROJECT`: everything worth knowing before a run, without training.

The dataset scan's findings (studio.dataset.scanner, the worker's own check, every image decoded
once), the bucket histogram and step count (studio.dataset.plan, the same code the trainer
uses), the model and the size of its LoRA, rough time for the device here, and the GPU memory
the planner predicted (training/memory_plan.py), for the settings and each GPU-memory preset,
when it has a plan for them: check never runs the planner (a minute for SDXL), and says "not
predicted yet" rather than guess (issue 17 item 9: a rough guess said 24.2 GB for SDXL at
1024 px, where the count is ~12).
"""

from __future__ import annotations

import json
from pathlib import Path

from studio import config, estimate
from studio.base_model import inspect as base_model
from studio.dataset import buckets, plan, scanner
from studio.config import TrainConfig
from studio.runs.project import Project
from training import sampling
from training.progress import Eta

PRESETS = Path(__file__).resolve().parent.parent / "assets" / "presets"
# Rough seconds per image-step of the full SD1.5 UNet at 512x512 with a LoRA (machine-notes.md §3:
# 18-23 s on a 2-core CPU in fp32; anchors.md §3a: ~2000 steps in 15-20 min on consumer GPUs),
# scaled by UNet size and pixels, plus a fixed per-step overhead (16 ms measured for the tiny
# model on CPU). Good to a factor of two: the Train tab shows the measured ETA once running.
SECONDS_PER_IMAGE_STEP = {"cuda": 0.35, "mps": 2.0, "cpu": 20.0}
STEP_OVERHEAD = {"cuda": 0.01, "mps": 0.03, "cpu": 0.016}
SD15_UNET_PARAMS = 860e6


def device_info() -> dict:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {"kind": "cuda", "name": props.name, "memory_bytes": props.total_memory,
                "count": torch.cuda.device_count()}
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return {"kind": "mps", "name": "Apple GPU", "memory_bytes": 0, "count": 1}
    return {"kind": "cpu", "name": "CPU", "memory_bytes": 0, "count": 0}


def seconds_per_step(kind: str, unet_params: int, cfg: TrainConfig) -> float:
    pixels = (cfg.resolution / 512) ** 2
    size = (unet_params or SD15_UNET_PARAMS) / SD15_UNET_PARAMS
    return STEP_OVERHEAD[kind] + SECONDS_PER_IMAGE_STEP[kind] * size * pixels * cfg.batch_size \
        * cfg.gradient_accumulation_steps


def predicted(project: Project, cfg: TrainConfig, items: list, card_bytes: int) -> dict:
    """The planner's cached plan for these settings (studio.machine.memory_fit.cached, as the Train tab
    reads it): peak and what the card needs, or predicted=False when there is none yet."""
    from studio.machine import memory_fit
    from training import memory_plan

    out = {"predicted": False, "peak_bytes": None, "needed_bytes": None, "limit": None,
           "fits": None}
    try:
        s = memory_plan.project_settings(project, cfg, items)
    except (FileNotFoundError, ValueError):
        return out  # no model configs: nothing the planner could count
    found = memory_fit.cached(project.cache, [s])
    if found is not None:
        out.update(predicted=True, peak_bytes=found.peak_bytes, limit=found.limit,
                   needed_bytes=memory_fit.needed_bytes(found),
                   fits=memory_fit.fits(found, card_bytes) if card_bytes else None)
    return out


def fitting_presets(project: Project, cfg: TrainConfig, items: list, memory: int) -> list[dict]:
    """Each GPU-memory preset over these settings, with the planner's figure when known."""
    out = []
    for path in sorted(PRESETS.glob("gpu-*.toml"), key=lambda p: int(p.stem[4:-2])):
        plan = predicted(project, config.load(path, cfg), items, memory)
        out.append({"preset": path.stem, "predicted": plan["predicted"],
                    "gpu_bytes": plan["needed_bytes"], "fits": plan["fits"]})
    return out


def report(project: Project, cfg: TrainConfig) -> dict:
    folder = project.resolve(cfg.dataset_dir)
    doc = scanner.scan(folder, cfg.exclude_images, cfg.repeats, cfg.resolution,
                       cfg.upscale_small_images)
    items = doc.training_items()
    train_items, held = plan.split(items, cfg)
    sizes = plan.bucket_sizes([it.size for it in train_items], cfg)
    per_epoch, total = plan.item_steps(items, cfg)
    info = base_model.inspect(cfg.base_model, project.root, cfg.prediction_type.value)
    est = estimate.estimate(info, cfg)
    device = device_info()
    memory = predicted(project, cfg, items, device["memory_bytes"])
    step_s = seconds_per_step(device["kind"], info.unet_params, cfg)
    # The run's samples and validation losses too, guessed as the training ETA guesses them
    # before they have run (training/progress.Eta): on a CPU they can cost more than training.
    prompts = sampling.sample_prompts(cfg, train_items)
    parts = Eta(total, per_epoch, cfg, len(prompts), len(held)).planned(step_s)
    return {
        "project": str(project.root), "dataset": str(folder),
        "images": len(items), "training_images": len(train_items), "validation_images": len(held),
        "image_steps_per_epoch": sum(it.repeats for it in train_items),
        "buckets": buckets.histogram(sizes) if sizes else {},
        "folders": {name: times for name, times in doc.folders.items()},
        "steps_per_epoch": per_epoch, "total_steps": total,
        "model": {"path": str(info.path or cfg.base_model), "architecture": info.architecture,
                  "problem": info.problem, "unet_params": info.unet_params,
                  "summary": info.summary, "native_resolution": info.native_resolution,
                  "resolution_warning": base_model.resolution_warning(info, cfg.resolution)},
        "lora": None if est is None else {
            "layers": est.layers, "params": est.params, "share_of_unet": est.share,
            "file_bytes": est.file_bytes},
        "device": device,
        "gpu_memory": memory,  # the planner's cached figure, never a guess
        "gpu_memory_bytes": memory["needed_bytes"],  # None: not predicted yet
        "seconds_per_step": round(step_s, 4),
        "estimated_seconds": round(sum(parts.values()), 1),
        "estimated_parts": {k: round(v, 2) for k, v in parts.items()},
        "presets": fitting_presets(project, cfg, items, device["memory_bytes"]),
        "doctor": doc.to_json(),
        "doctor_text": doc.to_text(),
        "blocking": [f.message for f in doc.blocking()],
        "ok": not doc.blocking() and not info.problem,
    }


def to_text(r: dict) -> str:
    h = estimate.human_bytes
    lines = [f"Project {r['project']}",
             f"Dataset {r['dataset']}: {r['images']} images ({r['training_images']} for "
             f"training, {r['validation_images']} held out for validation), "
             f"{r['image_steps_per_epoch']} image-steps per epoch"]
    lines.append("Buckets: " + (", ".join(f"{k} x{v}" for k, v in r["buckets"].items()) or "—"))
    lines.append(f"Steps: {r['steps_per_epoch']} per epoch, {r['total_steps']} in total")
    m = r["model"]
    lines.append(f"Model: {m['path']} ({m['summary'] if m['architecture'] else 'unknown'})" +
                 (f" — {m['problem']}" if m["problem"] else ""))
    if m["resolution_warning"]:
        lines.append(f"Warning: {m['resolution_warning']}")
    if r["lora"]:
        lo = r["lora"]
        share = f", {100 * lo['share_of_unet']:.2f}% of the UNet" if lo["share_of_unet"] else ""
        lines.append(f"LoRA: {lo['layers']} layers, {lo['params']:,} parameters{share}, file "
                     f"{h(lo['file_bytes'])}")
    d = r["device"]
    lines.append(f"Device: {d['name']}" + (f" ({h(d['memory_bytes'])})" if d["memory_bytes"]
                                           else ""))
    g = r["gpu_memory"]
    if g["predicted"]:
        lines.append(f"GPU memory (predicted): peak {h(g['peak_bytes'])} ({g['limit']}); the "
                     f"card needs {h(g['needed_bytes'])} with allocator slack and CUDA context")
    else:
        lines.append(f"GPU memory: not predicted yet (python -m training plan-memory "
                     f"{r['project']})")
    parts = r["estimated_parts"]
    extras = ", ".join(f"{k} {estimate.human_duration(v)}" for k, v in parts.items()
                       if k != "training" and v)
    lines.append(f"Time (rough): {estimate.human_duration(r['estimated_seconds'])} at "
                 f"~{r['seconds_per_step']:.2f} s/step on this device"
                 + (f" (training {estimate.human_duration(parts['training'])}, {extras})"
                    if extras else ""))
    known = [p for p in r["presets"] if p["predicted"]]
    if d["kind"] == "cuda" and known:
        fits = [p["preset"] for p in known if p["fits"]]
        lines.append("Presets that fit this GPU (predicted): " + (", ".join(fits) or "none"))
    if known:
        lines.append("GPU presets (memory each needs, predicted): " + ", ".join(
            f"{p['preset']} {h(p['gpu_bytes'])}" for p in known))
    lines += ["", r["doctor_text"]]
    return "\n".join(lines)


def dumps(r: dict) -> str:
    return json.dumps(r, ensure_ascii=False, default=str)
