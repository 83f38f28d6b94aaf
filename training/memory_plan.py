"""GPU memory planner: predicts peak VRAM by running one training step on meta tensors (no GPU).

The base model is built on the meta device (training/memory_model.py: shapes and dtypes, no
storage), then the trainer's own code runs on it: `cache.encode_text`, `loss.diffusion_loss`,
backward, clipping and the optimizer update (counted on small real tensors, one per kind of
LoRA tensor: `CountedModel.update_cost`). `memory_track.OnMeta` supplies what meta tensors lack
(autocast, the CPU's fused attention), and `memory_track.LiveBytes` counts every storage an op
creates and frees, so the peak is that of the real step, including what autocast casts and
backward saves. Three phases are counted: caching latents (VAE in fp32), the training step,
and a sample render mid-run.

    predict(settings, cache_dir=None) -> Plan     (studio.machine.memory_fit.Plan, JSON-cached)
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

import torch

from studio import atomic
from studio.config import TrainConfig
from studio.machine import memory_fit
from studio.machine.memory_fit import PLANNER_VERSION, MemorySettings, Plan
from training.memory_model import (TOKENS, CountedModel, checkpointing, optimizer_update,
                                   param_groups, quantized_bytes, read_configs, train_config)

resolve_model = memory_fit.model_folder  # the one rule, torch-free (the GUI asks it too)


def _step(s, m: CountedModel, meter, update, at_update: dict):
    """One optimizer step of train.py's loop; returns (forward/backward peak, its parts,
    activations at the end of forward, peak during the update); `at_update` gets the live
    total and parts as the update starts."""
    from training import cache
    from training.loss import diffusion_loss

    b, h, w = s.batch_size, s.height // 8, s.width // 8
    randn = m.randn
    meter.phase = "data"
    latents = randn(b, 4, h, w) + randn(b, 4, h, w)  # mean + std * noise
    noise, timesteps = randn(b, 4, h, w), torch.randint(0, 1000, (b,), device=m.device)
    added = None
    if s.live_text:
        with torch.set_grad_enabled(s.train_text_encoder):
            text, pooled = cache.encode_text(m.base, ["caption"] * b, m.device)
    else:
        text, pooled = m.cached_text(b)
    if m.sdxl:
        added = {"text_embeds": pooled, "time_ids": randn(b, 6)}
    meter.phase = "activations"
    meter.reset_peak()
    with m.amp(s):
        loss = diffusion_loss(m.unet, latents, text, m.scheduler, "epsilon", noise, timesteps,
                              5.0, m.dtype, added)
    saved = meter.now["activations"]  # what backward will need, and the outputs
    loss.backward()
    del loss, text, pooled, added, latents, noise, timesteps
    forward_peak, forward_parts = meter.peak, dict(meter.at_peak)
    meter.phase = "optimizer"
    meter.reset_peak()
    at_update.update(total=meter.total, parts=dict(meter.now))
    update()
    return forward_peak, forward_parts, saved, meter.peak


_MODELS: dict = {}  # model key -> CountedModel, the last few built in this process


def _model(s: MemorySettings, real: bool = False) -> CountedModel:
    configs = read_configs(resolve_model(s.model))
    if real:  # tests comparing with the CPU allocator: fresh real tensors every time
        return CountedModel(s, configs, real=True)
    key = json.dumps([configs, s.precision, s.rank, list(s.targets), s.train_text_encoder],
                     sort_keys=True)
    if key not in _MODELS:
        while len(_MODELS) >= 2:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = CountedModel(s, configs, real=False)
    return _MODELS[key]


def _train_step(s: MemorySettings, m: CountedModel, measure=None) -> dict:
    """The training step's counts, all but the optimizer's update (counted apart by
    `update_cost` and added in `_predict`): remembered per step setting, so plans that differ
    only in the optimizer or the base's quantization (priced in `_quantized`) reuse it."""
    key = ("step", s.batch_size, s.width, s.height, s.gradient_checkpointing, s.live_text,
           s.images, s.quantization, s.device)
    if key in m.memo:
        return m.memo[key]
    unet = m.unet
    if s.gradient_checkpointing:
        unet.enable_gradient_checkpointing(checkpointing(lambda: m.recompute(s)))
    elif unet.is_gradient_checkpointing:
        unet.disable_gradient_checkpointing()
    # Frozen UNet in the compute precision, LoRA weights in fp32.
    meter = m.new_meter(s)  # training starts with an empty card
    unet.train()
    for te in m.encoders if s.train_text_encoder else ():
        te.train()
    params = m.params + m.text_params
    for p in params:
        meter.add(p, "lora")
    meter.add_module(unet, "weights", quantized_bytes(s, unet))
    if s.live_text:
        for te in m.encoders:
            meter.add_module(te, "text_encoders")
    h, w = s.height // 8, s.width // 8
    per_image = 2 * 4 * 4 * h * w + (0 if s.live_text else 4 * TOKENS * m.context)
    keep = [torch.empty(s.images * per_image, dtype=torch.uint8, device=m.device)]
    meter.add(keep[-1], "data")  # the cached dataset
    if m.real:  # the real update: clip, step, zero_grad
        update, _ = optimizer_update(s, train_config(s), params,
                                     param_groups(m.params, m.text_params), keep)
    else:
        def update():
            for p in params:
                p.grad = None
    with meter, measure or nullcontext():
        # Real runs (tests) take two steps, the second with the optimizer state in place;
        # counting takes one and adds the state to its forward/backward peak.
        for _ in range(2 if m.real else 1):
            at_update = {}
            forward_peak, forward_parts, saved, step_peak = _step(s, m, meter, update,
                                                                  at_update)
    out = dict(forward_peak=forward_peak, forward_parts=forward_parts, saved=saved,
               step_peak=step_peak, at_update=at_update, lora=meter.now["lora"],
               state=meter.now["optimizer"], resident=meter.total)
    if not m.real:
        m.memo[key] = out
    return out


def _predict(s: MemorySettings, real: bool = False, measure=None) -> Plan:
    """Count the three phases on meta tensors. `real=True` runs them on real (uninitialised)
    CPU tensors instead, with `measure` (a context manager) around the training step: how
    tests compare the count with what the CPU allocator really did."""
    m = _model(s, real)
    # 1. Caching: the VAE, then the text encoders, each alone on the card.
    caching = m.caching(s)
    # 2. The training step.
    step = _train_step(s, m, measure)
    at_update = step["at_update"]
    if real:
        state = step["state"]
        step_peak = step["step_peak"]
        over = step_peak - at_update["total"] - state
    else:
        state, over = m.update_cost(s)
        step_peak = at_update["total"] + state + over
    grads = step["lora"] if s.gradient_accumulation > 1 else 0  # fp32, as the LoRA
    # From step 2 on the optimizer state is there during forward and backward; with
    # accumulation the gradients of earlier micro-batches are too.
    extra = 0 if real else state + grads
    forward_peak, forward_parts = step["forward_peak"], dict(step["forward_parts"])
    forward_parts.update(optimizer=forward_parts["optimizer"] + extra - grads,
                         gradients=max(forward_parts["gradients"], grads))
    training = max(forward_peak + extra, step_peak)
    if forward_peak + extra >= step_peak:
        parts = forward_parts
    else:
        parts = dict(at_update["parts"])
        parts["optimizer"] = parts.get("optimizer", 0) + state + over

    # 3. A sample mid-run, on top of what training keeps (weights, LoRA, data, state).
    resident = step["resident"] + (0 if real else state)
    sampling = resident + m.sampling(s) if s.sample_size else 0
    return Plan(int(training), int(caching), int(sampling), {k: int(v) for k, v in parts.items()},
                s, int(step["saved"]))


def _quantized(plan: Plan, s: MemorySettings) -> Plan:
    """A quantized base changes only how many bytes the frozen UNet weights take (activations
    are computed in the compute precision either way), so it is the unquantized plan with the
    weights recounted: no second step to count."""
    import dataclasses

    delta = _model(s).quantization_delta(s)
    parts = dict(plan.parts, weights=plan.parts["weights"] + delta)
    return dataclasses.replace(plan, training_bytes=plan.training_bytes + delta,
                               sampling_bytes=plan.sampling_bytes + delta if
                               plan.sampling_bytes else 0, parts=parts, settings=s)


def _key(s: MemorySettings) -> str:
    folder = resolve_model(s.model)
    identity = json.dumps([read_configs(folder), {**s.to_json(), "model": ""}, PLANNER_VERSION,
                           torch.__version__], sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def predict(s: MemorySettings, cache_dir: Path | None = None) -> Plan:
    """The predicted peak GPU memory of training with `s`; with `cache_dir` (a project's cache
    folder) the plan is read from / written to cache_dir/memory/<key>.json."""
    path = Path(cache_dir) / "memory" / f"{_key(s)}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return Plan.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError):
            pass  # a damaged or older entry: compute it again
    if s.quantization != "none":
        plan = _quantized(predict(s.replace(quantization="none"), cache_dir), s)
    else:
        plan = _predict(s)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(plan.to_json(), indent=1))
    return plan


def project_settings(project, cfg: TrainConfig, items: list | None = None) -> MemorySettings:
    """The MemorySettings a project's training would run with (studio.machine.memory_fit, shared with
    the Train tab); `items` are its dataset's training Items (scanned when not given); "auto"
    precision as this machine's GPU would pick it (bf16 where there is none, as on most
    current cards)."""
    from studio.dataset import scanner

    if items is None:
        items = scanner.scan(project.resolve(cfg.dataset_dir), cfg.exclude_images,
                             cfg.repeats).training_items()
    precision = "bf16"
    if torch.cuda.is_available():
        from training.train import mixed_precision

        precision = {"no": "fp32"}.get(mixed_precision(cfg), mixed_precision(cfg))
    return memory_fit.project_settings(cfg, project.root, items, precision)


def report(*args, **kwargs) -> dict:
    """The plan and fit for a project (training/memory_cli.py)."""
    from training.memory_cli import report as run

    return run(*args, **kwargs)


def cli(*args, **kwargs) -> int:
    """`python -m training plan-memory` (training/memory_cli.py)."""
    from training.memory_cli import cli as run

    return run(*args, **kwargs)
