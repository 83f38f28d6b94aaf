"""GPU memory planner: predicts peak VRAM by running one training step on meta tensors (no GPU).

The base model's UNet, VAE and text encoders are built from their config.json files on the meta
device (shapes and dtypes, no storage), then the trainer's own code runs on them: `models.add_lora`, `models.add_text_lora`,
`cache.encode_text`, `loss.diffusion_loss`, `optim.build_optimizer`, backward, clipping and the
optimizer update (on fake tensors: the fused optimizers have no meta kernels).
`memory_track.OnMeta` supplies what meta tensors lack (autocast, the CPU's fused attention), and
`memory_track.LiveBytes` counts every storage an op creates and frees, so the
peak is that of the real step, including what autocast casts and backward saves. Three phases
are counted: caching latents (VAE in fp32), the training step, and a sample render mid-run.

    predict(settings, cache_dir=None) -> Plan     (studio.machine.memory_fit.Plan, JSON-cached)
"""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

from studio import atomic
from studio.machine import memory_fit
from studio.config import Optimizer, TargetPreset, TrainConfig
from studio.machine.memory_fit import PLANNER_VERSION, MemorySettings, Plan
from training.memory_track import CudaAutocast, LiveBytes, OnMeta

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
    # On the meta device: no init work, no memory.
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


def _trainable(module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


class _Tokens:
    """Stands in for a CLIP tokenizer: every caption becomes TOKENS ids."""
    model_max_length = TOKENS

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, captions, **_):
        return SimpleNamespace(input_ids=torch.zeros(len(captions), TOKENS, dtype=torch.long,
                                                     device=self.device))


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


def _checkpointing(recompute):
    """diffusers' default checkpointing call (non-reentrant), with `recompute()` (the planner's
    torch function modes: CUDA's fp32 ops, meta autocast) around the recomputation: function
    modes are not active during backward. No RNG state is kept: meta tensors have none."""
    from contextlib import nullcontext

    def run(module, *args):
        return torch.utils.checkpoint.checkpoint(
            module.__call__, *args, use_reentrant=False, preserve_rng_state=False,
            context_fn=lambda: (nullcontext(), recompute()))
    return run


def _optimizer(s, cfg, params, groups, keep):
    """The update as train.py runs it: clip, step, zero_grad; returns (update, state_of), where
    state_of(param) lists the state tensors the update made for it. AdamW 8-bit (bitsandbytes,
    CUDA only) is counted from its state layout instead: two uint8 moments plus an fp32 absmax
    per 256 values for tensors of 4096+ values, fp32 moments below that (bnb's
    min_8bit_size)."""
    from training.optim import build_optimizer

    optimizer = None if s.optimizer == "adamw8bit" else build_optimizer(
        cfg, groups, torch.device("cuda" if s.device == "cuda" else "cpu"))
    layout: dict = {}  # AdamW 8-bit's state per parameter, made on the first step as bnb does

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        elif not layout:
            for p in params:
                n = p.numel()
                layout[p] = torch.empty(2 * n + 8 * math.ceil(n / 256) if n >= 4096 else 8 * n,
                                        dtype=torch.uint8, device=p.device)
        for p in params:
            p.grad = None

    def state_of(p) -> list[torch.Tensor]:
        found = optimizer.state.get(p, {}).values() if optimizer is not None else [layout[p]]
        return [t for t in found if isinstance(t, torch.Tensor)]
    keep.append((optimizer, layout))
    return update, state_of


def _step(s, m: "_Model", meter, update, at_update: dict):
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
        text, pooled = randn(b, TOKENS, m.context), (
            randn(b, m.encoders[-1].config.projection_dim) if m.sdxl else None)
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


class _Model:
    """One base model built for counting, with its LoRA: made once and reused by every plan
    whose settings differ only in what a step does (batch, checkpointing, optimizer,
    quantization, size), which is what the fit search and the preset tables vary. Building and
    materialising SDXL costs seconds; so does each phase, so phases that do not depend on a
    setting are counted once per model and remembered (`memo`)."""

    def __init__(self, s: MemorySettings, configs: dict, real: bool):
        from diffusers import DDPMScheduler

        from training import models

        self.configs, self.real, self.memo = configs, real, {}
        self.dtype = DTYPES[s.precision]
        self.cfg = _train_config(s)
        self.sdxl = "text_encoder_2" in configs
        self.device = torch.device("cpu" if real else "meta")
        self.scheduler = DDPMScheduler.from_config(configs["scheduler"])
        # add_noise moves (and keeps) this table on the latents' device: 4 KB, moved up front
        # so that the first plan of a model counts what every later one does.
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device)
        # The text encoders in the compute precision and the VAE in fp32, as train.py loads
        # them (models.load_base(text_dtype=weight_dtype); the VAE overflows in fp16).
        self.vae = _build(configs, "vae", torch.float32, self.device.type)
        self.encoders = [_build(configs, p, self.dtype, self.device.type)
                         for p in ("text_encoder", "text_encoder_2") if p in configs]
        self.base = SimpleNamespace(
            text_encoder=self.encoders[0], tokenizer=_Tokens(self.device),
            tokenizer_2=_Tokens(self.device), text_encoder_2=self.encoders[1] if self.sdxl
            else None, text_encoders=tuple(self.encoders), is_sdxl=self.sdxl)
        self.unet = _build(configs, "unet", self.dtype, self.device.type)
        models.add_lora(self.unet, self.cfg)  # the trainer's own LoRA setup (fp32 LoRA weights)
        if s.train_text_encoder:
            models.add_text_lora(self.base, self.cfg)
        self.params = _trainable(self.unet)
        self.text_params = [p for te in self.encoders for p in _trainable(te)]
        self.meter = LiveBytes()
        for p in self.params + self.text_params:  # gradients count as such once made
            p.register_post_accumulate_grad_hook(
                lambda p: self.meter.move(p.grad, "gradients"))
        self.context = sum(te.config.hidden_size for te in self.encoders)

    def randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, device=self.device)

    @contextmanager
    def amp(self, s: MemorySettings):
        """train.py's autocast as the planner runs it: CPU autocast on real tensors (with
        CUDA's fp32 ops when counting for CUDA), its stand-in on meta tensors."""
        if not self.real:
            with OnMeta(self.dtype, s.device == "cuda"):
                yield
            return
        with CudaAutocast() if s.device == "cuda" else nullcontext(), torch.autocast(
                "cpu", self.dtype, enabled=self.dtype != torch.float32):
            yield

    def recompute(self, s: MemorySettings):
        """The function modes a checkpointed block's recomputation needs (real autocast is
        restored by torch.utils.checkpoint itself)."""
        if not self.real:
            return OnMeta(self.dtype, s.device == "cuda")
        return CudaAutocast() if s.device == "cuda" else nullcontext()

    def update_cost(self, s: MemorySettings) -> tuple[int, int]:
        """(optimizer state, the update's own peak above it and the gradients): train.py's
        clip, step and zero_grad, run for real on one CPU tensor per kind of LoRA tensor
        (shape, dtype, group, start value): the fused optimizers have no meta kernels, Prodigy
        reads values, and Adafactor's per-tensor Python would take seconds for SDXL's 1,100
        tensors. Every optimizer we offer keeps per-tensor state that depends only on its
        kind, so the state is each kind's times its count. Counted once per model and
        optimizer."""
        key = ("optimizer", s.optimizer, s.device)
        if key not in self.memo:
            from collections import Counter

            # LoRA's B starts at zero (Hu et al. 2021, §4.1), and Prodigy keeps a copy of a
            # weight only when it is not all zeros: the start value is part of the key.
            zero = {id(p) for module in (self.unet, *self.encoders)
                    for name, p in module.named_parameters() if ".lora_B." in name}
            count = Counter((tuple(p.shape), p.dtype, group, id(p) in zero) for group, ps in
                            enumerate((self.params, self.text_params)) for p in ps)
            meter = LiveBytes(ROUNDING[s.device])
            one = {}
            for kind in count:
                shape, dtype, _, at_zero = kind
                p = one[kind] = torch.nn.Parameter((torch.zeros if at_zero else torch.ones)(
                    shape, dtype=dtype))
                p.grad = torch.zeros_like(p)
                meter.add(p, "lora")
                meter.add(p.grad, "gradients")
            groups = [{"params": [p for k, p in one.items() if k[2] == 0]}]
            if self.text_params:
                groups.append({"params": [p for k, p in one.items() if k[2] == 1], "lr": 5e-5})
            keep: list = []
            update, state_of = _optimizer(s, _train_config(s), list(one.values()), groups, keep)
            meter.phase = "optimizer"
            before = meter.total
            with meter:
                update()
            over = meter.peak - before - meter.now["optimizer"]
            state = sum(n * sum(meter.size(t) for t in state_of(one[k]))
                        for k, n in count.items())
            self.memo[key] = (state, over)
        return self.memo[key]

    def new_meter(self, s: MemorySettings) -> LiveBytes:
        self.meter = LiveBytes(ROUNDING[s.device])
        return self.meter

    def caching(self, s: MemorySettings) -> int:
        """Caching latents (fp32 VAE, `encode_batch` images a call, training/cache.py) and then
        text embeddings (the text encoders alone): the larger peak. Nothing else is on the card
        (train.py moves the UNet there after caching)."""
        width, height = s.encode_width or s.width, s.encode_height or s.height
        key = ("caching", width, height, s.encode_batch, s.device)
        if key not in self.memo:
            from training import cache

            meter = self.new_meter(s)
            meter.add_module(self.vae, "weights")
            with meter, torch.no_grad():
                dist = self.vae.encode(self.randn(s.encode_batch, 3, height, width)
                                       ).latent_dist
                _ = dist.mean.float(), dist.std.float()
                del dist, _
            peak = meter.peak
            meter = self.new_meter(s)
            for te in self.encoders:
                meter.add_module(te, "text_encoders")
            with meter, torch.no_grad():
                cache.encode_text(self.base, ["caption"], self.device)
            self.memo[key] = max(peak, meter.peak)
        return self.memo[key]

    def sampling(self, s: MemorySettings) -> int:
        """What a sample mid-run (training/sampling.py) adds to what training keeps on the card:
        the fp32 VAE joins the trained UNet, the text encoders encode the prompts (when their
        outputs are cached they visit the card only for that: sampling.visiting), the UNet
        denoises a batch of 2 (prompt and negative prompt), then the VAE decodes one latent
        in fp32, in tiles when large (sampling.vae_tiles). The same for every batch,
        checkpointing and optimizer."""
        key = ("sampling", s.sample_size, s.live_text, s.device)
        if key not in self.memo:
            from training import cache
            from training.sampling import vae_tiles

            sh = s.sample_size // 8
            self.unet.eval()
            meter = self.new_meter(s)  # counts only what the sample adds to what is there:
            meter.add_module(self.unet, "weights")  # (views of a weight are no new bytes)
            for te in self.encoders if s.live_text else ():
                meter.add_module(te, "text_encoders")
            before = meter.total
            meter.add_module(self.vae, "weights")
            for te in self.encoders:
                meter.add_module(te, "text_encoders")
            meter.reset_peak()
            with meter, torch.no_grad():
                text, pooled = cache.encode_text(self.base, ["a", "b"], self.device)
                for te in self.encoders if not s.live_text else ():
                    meter.forget_module(te)  # back off the card
                added = {"text_embeds": pooled, "time_ids": self.randn(2, 6)} \
                    if self.sdxl else None
                with self.amp(s):
                    self.unet(self.randn(2, 4, sh, sh).to(self.dtype),
                              torch.tensor([500, 500], device=self.device),
                              text.to(self.dtype), added_cond_kwargs=added)
                del text, pooled, added
                with vae_tiles(self.vae, s.sample_size, s.sample_size):
                    self.vae.decode(self.randn(1, 4, sh, sh))
            self.memo[key] = meter.peak - before
        return self.memo[key]

    def quantization_delta(self, s: MemorySettings) -> int:
        """Bytes a quantized base saves (negative) on the frozen UNet weights."""
        key = ("quantized", s.quantization)
        if key not in self.memo:
            scale = quantized_bytes(s, self.unet)
            self.memo[key] = sum(
                int(scale(n, t, t.numel() * t.element_size())) - t.numel() * t.element_size()
                for n, t in self.unet.named_parameters())
        return self.memo[key]


_MODELS: dict = {}  # model key -> _Model, the last few built in this process


def _model(s: MemorySettings, real: bool = False) -> _Model:
    configs = _configs(resolve_model(s.model))
    if real:  # tests comparing with the CPU allocator: fresh real tensors every time
        return _Model(s, configs, real=True)
    key = json.dumps([configs, s.precision, s.rank, list(s.targets), s.train_text_encoder],
                     sort_keys=True)
    if key not in _MODELS:
        while len(_MODELS) >= 2:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = _Model(s, configs, real=False)
    return _MODELS[key]


def _train_step(s: MemorySettings, m: _Model, measure=None) -> dict:
    """The training step's counts, all but the optimizer's update (counted apart by
    `update_cost` and added in `_predict`): remembered per step setting, so plans that differ
    only in the optimizer or the base's quantization (priced in `_quantized`) reuse it."""
    key = ("step", s.batch_size, s.width, s.height, s.gradient_checkpointing, s.live_text,
           s.images, s.quantization, s.device)
    if key in m.memo:
        return m.memo[key]
    unet = m.unet
    if s.gradient_checkpointing:
        unet.enable_gradient_checkpointing(_checkpointing(lambda: m.recompute(s)))
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
        groups = [{"params": m.params}] + ([{"params": m.text_params, "lr": 5e-5}]
                                           if m.text_params else [])
        update, _ = _optimizer(s, _train_config(s), params, groups, keep)
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


def report(*args, **kwargs) -> dict:
    """The plan and fit for a project (training/memory_cli.py)."""
    from training.memory_cli import report as run

    return run(*args, **kwargs)


def cli(*args, **kwargs) -> int:
    """`python -m training plan-memory` (training/memory_cli.py)."""
    from training.memory_cli import cli as run

    return run(*args, **kwargs)
