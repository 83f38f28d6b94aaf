"""GPU memory planner: predicts peak VRAM by running one training step on fake tensors (no GPU).

The base model's UNet, VAE and text encoders are built from their config.json files on the meta
device and materialised as fake tensors (torch FakeTensorMode: shapes and dtypes, no storage),
then the trainer's own code runs on them: `models.add_lora`, `models.add_text_lora`,
`cache.encode_text`, `loss.diffusion_loss`, `optim.build_optimizer`, backward, clipping and the
optimizer update. `memory_track.LiveBytes` counts every storage an op creates and frees, so the
peak is that of the real step, including what autocast casts and backward saves. Three phases
are counted: caching latents (VAE in fp32), the training step, and a sample render mid-run.

    predict(settings, cache_dir=None) -> Plan     (studio.machine.memory_fit.Plan, JSON-cached)
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch

from studio import atomic
from studio.machine import memory_fit
from studio.config import Optimizer, TargetPreset, TrainConfig
from studio.machine.memory_fit import PLANNER_VERSION, MemorySettings, Plan
from training.memory_track import CudaAutocast, LiveBytes

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ROUNDING = {"cuda": 512, "cpu": 1}  # the CUDA caching allocator rounds every block up to 512 B
TOKENS = 77  # CLIP's context length: every caption is padded to it


resolve_model = memory_fit.model_folder  # the one rule, torch-free (the GUI asks it too)


def _configs(folder: Path) -> dict:
    """The component configs present in a model folder (base_model.configs reads each file)."""
    from studio.base_model.configs import read_json

    found = {part: read_json(folder / part / ("scheduler_config.json" if part == "scheduler"
                                              else "config.json"))
             for part in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")}
    return {part: config for part, config in found.items() if config}


def _build(configs: dict, part: str, dtype: torch.dtype, device: str = "meta"):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    c = configs[part]
    logging.set_verbosity_error()  # "modules that should be kept in float32: []" on every cast
    # On the meta device: no init work, no memory. `_materialise` turns it into fake tensors.
    with torch.device(device):
        if part == "unet":
            module = UNet2DConditionModel.from_config(c)
        elif part == "vae":
            module = AutoencoderKL.from_config(c)
        else:
            fields = {k: v for k, v in c.items() if not k.startswith("_") and k != "architectures"}
            kind = CLIPTextModelWithProjection if part == "text_encoder_2" else CLIPTextModel
            module = kind(CLIPTextConfig(**fields))
        module.to(dtype)
    module.requires_grad_(False)
    module.eval()
    return module


def _materialise(*modules) -> list[list[torch.nn.Parameter]]:
    """Inside a FakeTensorMode: meta modules become fake CPU tensors (dtypes kept); returns
    each module's trainable parameters (the new Parameter objects)."""
    out = []
    for m in modules:
        if next(m.parameters()).device.type == "meta":
            m.to_empty(device="cpu")
        out.append([p for p in m.parameters() if p.requires_grad])
    return out


class _Tokens:
    """Stands in for a CLIP tokenizer: every caption becomes TOKENS ids (fake tensors)."""
    model_max_length = TOKENS

    def __call__(self, captions, **_):
        return SimpleNamespace(input_ids=torch.zeros(len(captions), TOKENS, dtype=torch.long))


def _train_config(s: MemorySettings) -> TrainConfig:
    return TrainConfig(rank=s.rank, alpha=float(s.rank), target_preset=TargetPreset.custom,
                       target_modules=tuple(s.targets), optimizer=Optimizer(s.optimizer),
                       train_text_encoder=s.train_text_encoder,
                       gradient_checkpointing=s.gradient_checkpointing)


QUANT_BYTES = {  # bytes per weight of a quantized Linear, and extra bytes per output row
    "fp8": (1.0, 4),  # torchao float8 weight-only: e4m3 weights + one fp32 scale per row
    "int8": (1.0, 4),  # torchao int8 weight-only (Int8WeightOnlyConfig): int8 + a scale per row
    "nf4": (0.5 + 4 / 64, 0),  # bitsandbytes NF4: 4 bits + an fp32 absmax per 64-value block
}


def quantized_bytes(s: MemorySettings, unet: torch.nn.Module):
    """Bytes each UNet weight takes under `s.quantization` (None: as stored). Quantizing
    backends (torchao, bitsandbytes) replace nn.Linear weights; convs, biases, norms and the
    LoRA stay in the compute precision."""
    if s.quantization == "none":
        return None
    per_weight, per_row = QUANT_BYTES[s.quantization]
    linear = {f"{name}.weight" for name, m in unet.named_modules()
              if type(m) is torch.nn.Linear and ".lora_" not in name and "lora_" not in name}

    def scale(name, t, size):
        if name in linear:
            return math.ceil(t.numel() * per_weight) + per_row * t.shape[0]
        return size
    return scale


def _checkpoint(module, *args):
    """diffusers' default checkpointing call (non-reentrant), with CUDA's fp32 autocast ops also
    in the recomputation: torch function modes are not active during backward."""
    from contextlib import nullcontext

    return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False,
                                             context_fn=lambda: (nullcontext(), CudaAutocast()))


def _optimizer(s, cfg, params, groups, keep):
    """The update as train.py runs it: clip, step, zero_grad. AdamW 8-bit (bitsandbytes, CUDA
    only) is counted from its state layout instead: two uint8 moments plus an fp32 absmax per
    256 values for tensors of 4096+ values, fp32 moments below that (bnb's min_8bit_size)."""
    from training.optim import build_optimizer

    optimizer = None if s.optimizer == "adamw8bit" else build_optimizer(
        cfg, groups, torch.device("cuda" if s.device == "cuda" else "cpu"))
    state: list[torch.Tensor] = []  # AdamW 8-bit's, made on the first step as bnb does

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        elif not state:
            for p in params:
                n = p.numel()
                state.append(torch.empty(2 * n + 8 * math.ceil(n / 256) if n >= 4096 else 8 * n,
                                        dtype=torch.uint8))
        for p in params:
            p.grad = None
    keep.append((optimizer, state))
    return update


def _step(s, unet, base, scheduler, meter, update, context, sdxl, fp32_ops, autocast):
    """One optimizer step of train.py's loop; returns (forward/backward peak, its parts,
    activations at the end of forward, peak during the update)."""
    from training import cache
    from training.loss import diffusion_loss

    b, h, w = s.batch_size, s.height // 8, s.width // 8
    dtype = DTYPES[s.precision]
    meter.phase = "data"
    latents = torch.randn(b, 4, h, w) + torch.randn(b, 4, h, w)  # mean + std * noise
    noise, timesteps = torch.randn(b, 4, h, w), torch.randint(0, 1000, (b,))
    added = None
    if s.live_text:
        with torch.set_grad_enabled(s.train_text_encoder):
            text, pooled = cache.encode_text(base, ["caption"] * b, torch.device("cpu"))
    else:
        text, pooled = torch.randn(b, TOKENS, context), (
            torch.randn(b, base.text_encoders[-1].config.projection_dim) if sdxl else None)
    if sdxl:
        added = {"text_embeds": pooled, "time_ids": torch.randn(b, 6)}
    meter.phase = "activations"
    meter.reset_peak()
    with fp32_ops, torch.autocast(**autocast):
        loss = diffusion_loss(unet, latents, text, scheduler, "epsilon", noise, timesteps, 5.0,
                              dtype, added)
    saved = meter.now["activations"]  # what backward will need, and the outputs
    loss.backward()
    del loss, text, pooled, added, latents, noise, timesteps
    forward_peak, forward_parts = meter.peak, dict(meter.at_peak)
    meter.phase = "optimizer"
    meter.reset_peak()
    update()
    return forward_peak, forward_parts, saved, meter.peak


def _predict(s: MemorySettings, real: bool = False, measure=None) -> Plan:
    """Count the three phases on fake tensors. `real=True` runs them on real (uninitialised)
    CPU tensors instead, with `measure` (a context manager) around the training step: how
    tests compare the count with what the CPU allocator really did."""
    from contextlib import nullcontext

    from diffusers import DDPMScheduler
    from torch._subclasses.fake_tensor import FakeTensorMode

    from training import cache, models

    folder = resolve_model(s.model)
    configs = _configs(folder)
    dtype = DTYPES[s.precision]
    cfg = _train_config(s)
    h, w = s.height // 8, s.width // 8
    sdxl = "text_encoder_2" in configs
    autocast = dict(device_type="cpu", dtype=dtype, enabled=dtype != torch.float32)
    fp32_ops = CudaAutocast() if s.device == "cuda" else nullcontext()
    meter = LiveBytes(ROUNDING[s.device])
    keep: list = []  # what stays allocated after the step (optimizer state)
    scheduler = DDPMScheduler.from_config(configs["scheduler"])
    # Modules are built and given their LoRA on the meta device: module.to() cannot swap fake
    # parameters (FakeTensorMode holds weak references to them), so nothing moves once fake.
    where = "cpu" if real else "meta"
    vae = _build(configs, "vae", torch.float32, where)
    encoders = [_build(configs, p, torch.float32, where) for p in ("text_encoder",
                                                                    "text_encoder_2")
                if p in configs]
    base = SimpleNamespace(text_encoder=encoders[0], tokenizer=_Tokens(),
                           text_encoder_2=encoders[1] if sdxl else None, tokenizer_2=_Tokens(),
                           text_encoders=tuple(encoders), is_sdxl=sdxl)
    unet = _build(configs, "unet", dtype, where)
    models.add_lora(unet, cfg)  # the trainer's own LoRA setup: targets, fp32 LoRA weights
    if s.train_text_encoder:
        models.add_text_lora(base, cfg)
    if s.gradient_checkpointing:
        unet.enable_gradient_checkpointing(_checkpoint if s.device == "cuda" else None)
    with nullcontext() if real else FakeTensorMode(allow_non_fake_inputs=True):
        params, _, *te_params = _materialise(unet, vae, *encoders)
        text_params = [p for ps in te_params for p in ps]
        # 1. Caching: the VAE (fp32, training/cache.py) encodes `encode_batch` images at a time.
        meter.add_module(vae, "weights")
        with meter, torch.no_grad():
            dist = vae.encode(torch.zeros(s.encode_batch, 3, s.height, s.width)).latent_dist
            _ = dist.mean.float(), dist.std.float()
            del dist, _
        caching = meter.peak
        meter = LiveBytes(ROUNDING[s.device])
        for te in encoders:
            meter.add_module(te, "text_encoders")
        with meter, torch.no_grad():
            cache.encode_text(base, ["caption"], torch.device("cpu"))
        caching = max(caching, meter.peak)
        meter = LiveBytes(ROUNDING[s.device])  # training starts with an empty card

        # 2. The training step. Frozen UNet in the compute precision, LoRA weights in fp32.
        unet.train()
        for te in encoders if s.train_text_encoder else ():
            te.train()
        for p in params + text_params:
            meter.add(p, "lora")
        meter.add_module(unet, "weights", quantized_bytes(s, unet))
        if s.live_text:
            for te in encoders:
                meter.add_module(te, "text_encoders")
        for p in params + text_params:
            p.register_post_accumulate_grad_hook(lambda p: meter.move(p.grad, "gradients"))
        context = sum(te.config.hidden_size for te in encoders)
        per_image = 2 * 4 * 4 * h * w + (0 if s.live_text else 4 * TOKENS * context)
        keep.append(torch.empty(s.images * per_image, dtype=torch.uint8))  # the cached dataset
        meter.add(keep[-1], "data")
        groups = [{"params": params}] + ([{"params": text_params, "lr": 5e-5}]
                                         if text_params else [])
        update = _optimizer(s, cfg, params + text_params, groups, keep)
        with meter, measure or nullcontext():
            # Real runs (tests) take two steps, the second with the optimizer state in place;
            # counting takes one and adds the state to its forward/backward peak.
            for _ in range(2 if real else 1):
                forward_peak, forward_parts, saved, step_peak = _step(
                    s, unet, base, scheduler, meter, update, context, sdxl, fp32_ops, autocast)
        state = meter.now["optimizer"]
        grads = meter.now["lora"] if s.gradient_accumulation > 1 else 0  # fp32, as the LoRA
        # From step 2 on the optimizer state is there during forward and backward; with
        # accumulation the gradients of earlier micro-batches are too.
        extra = 0 if real else state + grads
        forward_parts.update(optimizer=forward_parts["optimizer"] + extra - grads,
                             gradients=max(forward_parts["gradients"], grads))
        training = max(forward_peak + extra, step_peak)

        # 3. A sample mid-run (training/sampling.py): VAE and text encoders join the trained
        #    UNet and optimizer state; the UNet denoises a batch of 2 (prompt and negative
        #    prompt), then the VAE decodes one latent in fp32.
        sampling = 0
        if s.sample_size:
            sh = s.sample_size // 8
            unet.eval()
            meter.add_module(vae, "weights")
            for te in encoders:
                meter.add_module(te, "text_encoders")
            meter.reset_peak()
            with meter, torch.no_grad():
                text, pooled = cache.encode_text(base, ["a", "b"], torch.device("cpu"))
                added = {"text_embeds": pooled, "time_ids": torch.randn(2, 6)} if sdxl else None
                with fp32_ops, torch.autocast(**autocast):
                    unet(torch.randn(2, 4, sh, sh).to(dtype), torch.tensor([500, 500]),
                         text.to(dtype), added_cond_kwargs=added)
                vae.decode(torch.randn(1, 4, sh, sh))
            sampling = meter.peak
    parts = {k: int(v) for k, v in forward_parts.items()} if forward_peak + extra >= step_peak \
        else {k: int(v) for k, v in meter.at_peak.items()}
    return Plan(int(training), int(caching), int(sampling), parts, s, int(saved))


def _quantized(plan: Plan, s: MemorySettings) -> Plan:
    """A quantized base changes only how many bytes the frozen UNet weights take (activations
    are computed in the compute precision either way), so it is the unquantized plan with the
    weights recounted on the meta-device UNet: no second step to count."""
    import dataclasses

    unet = _build(_configs(resolve_model(s.model)), "unet", DTYPES[s.precision])
    scale = quantized_bytes(s, unet)
    delta = sum(int(scale(n, t, t.numel() * t.element_size())) - t.numel() * t.element_size()
                for n, t in unet.named_parameters())
    parts = dict(plan.parts, weights=plan.parts["weights"] + delta)
    return dataclasses.replace(plan, training_bytes=plan.training_bytes + delta,
                               sampling_bytes=plan.sampling_bytes + delta if
                               plan.sampling_bytes else 0, parts=parts, settings=s)


def _key(s: MemorySettings) -> str:
    folder = resolve_model(s.model)
    identity = json.dumps([_configs(folder), {**s.to_json(), "model": ""}, PLANNER_VERSION,
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


def report(project, cfg: TrainConfig, gpu_bytes: int | None, with_fit: bool = True) -> dict:
    """The plan for a project and, with `gpu_bytes`, whether it fits that card and (unless
    `with_fit` is False) the fastest settings that fit it (`python -m training plan-memory`;
    the Train tab shows the same)."""
    from studio.machine.memory_fit import CONFIG_NAMES, fit, fits, needed_bytes

    s = project_settings(project, cfg)
    plan = predict(s, project.cache)
    out = {"plan": plan.to_json(), "gpu_bytes": gpu_bytes, "fits": None, "fit": None}
    if gpu_bytes:
        out["fits"] = fits(plan, gpu_bytes)
    if gpu_bytes and with_fit:
        found = fit(s, gpu_bytes, lambda c: predict(c, project.cache))
        out["fit"] = {"ok": found.ok, "changes": found.changes, "tried": found.tried,
                      "set": [f"{CONFIG_NAMES[k]}={str(v).lower()}" for k, v in
                              found.changes.items()],
                      "plan": found.plan.to_json() if found.plan else None,
                      "needed_bytes": needed_bytes(found.plan) if found.plan else 0}
    return out


def to_text(r: dict) -> str:
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
             f"at a time)",
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
            f"nothing fits; the smallest setup tried needs {gib(f['needed_bytes'])}. "
            f"Lower the resolution or the rank."))
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
