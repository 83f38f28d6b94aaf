"""The base model as the GPU memory planner counts it (training/memory_plan.py).

`CountedModel` builds a model's UNet, VAE and text encoders from their config.json files on the
meta device (shapes and dtypes, no storage) with the trainer's own LoRA (`models.add_lora`), and
counts the phases that do not depend on the training step's settings: caching latents and text
(`caching`), a sample mid-run (`sampling`), the optimizer's state and update (`update_cost`) and
a quantized base's bytes (`quantization_delta`), each counted once per model and remembered.
With `real=True` the same model is built from real CPU tensors, for tests that compare the
count with the CPU allocator.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

from studio.config import Optimizer, TargetPreset, TrainConfig
from studio.machine.memory_fit import MemorySettings
from training.memory_track import CudaAutocast, LiveBytes, OnMeta

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ROUNDING = {"cuda": 512, "cpu": 1}  # the CUDA caching allocator rounds every block up to 512 B
TOKENS = 77  # CLIP's context length: every caption is padded to it



def read_configs(folder: Path) -> dict:
    """The component configs present in a model folder (base_model.configs reads each file)."""
    from studio.base_model.configs import read_json

    found = {part: read_json(folder / part / ("scheduler_config.json" if part == "scheduler"
                                              else "config.json"))
             for part in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")}
    return {part: config for part, config in found.items() if config}


def build(configs: dict, part: str, dtype: torch.dtype, device: str = "meta"):
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


def trainable(module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


class Tokens:
    """Stands in for a CLIP tokenizer: every caption becomes TOKENS ids."""
    model_max_length = TOKENS

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, captions, **_):
        return SimpleNamespace(input_ids=torch.zeros(len(captions), TOKENS, dtype=torch.long,
                                                     device=self.device))


def train_config(s: MemorySettings) -> TrainConfig:
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


def checkpointing(recompute):
    """diffusers' default checkpointing call (non-reentrant), with `recompute()` (the planner's
    torch function modes: CUDA's fp32 ops, meta autocast) around the recomputation: function
    modes are not active during backward. No RNG state is kept: meta tensors have none."""
    def run(module, *args):
        return torch.utils.checkpoint.checkpoint(
            module.__call__, *args, use_reentrant=False, preserve_rng_state=False,
            context_fn=lambda: (nullcontext(), recompute()))
    return run


def param_groups(unet_params: list, text_params: list) -> list[dict]:
    """train.py's parameter groups: the UNet's LoRA, and the text encoders' at their own
    (AdamW-scale) learning rate."""
    return [{"params": unet_params}] + ([{"params": text_params, "lr": 5e-5}]
                                        if text_params else [])


def optimizer_update(s, cfg, params, groups, keep):
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


class CountedModel:
    """One base model built for counting, with its LoRA: made once and reused by every plan
    whose settings differ only in what a step does (batch, checkpointing, optimizer,
    quantization, size), which is what the fit search and the preset tables vary. Building
    SDXL and counting each phase take seconds, so phases that do not depend on a setting are
    counted once per model and remembered (`memo`)."""

    def __init__(self, s: MemorySettings, configs: dict, real: bool):
        from diffusers import DDPMScheduler

        from training import models

        self.configs, self.real, self.memo = configs, real, {}
        self.dtype = DTYPES[s.precision]
        self.cfg = train_config(s)
        self.sdxl = "text_encoder_2" in configs
        self.device = torch.device("cpu" if real else "meta")
        self.scheduler = DDPMScheduler.from_config(configs["scheduler"])
        # add_noise moves (and keeps) this table on the latents' device: 4 KB, moved up front
        # so that the first plan of a model counts what every later one does.
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device)
        # The text encoders in the compute precision and the VAE in fp32, as train.py loads
        # them (models.load_base(text_dtype=weight_dtype); the VAE overflows in fp16).
        self.vae = build(configs, "vae", torch.float32, self.device.type)
        self.encoders = [build(configs, p, self.dtype, self.device.type)
                         for p in ("text_encoder", "text_encoder_2") if p in configs]
        self.base = SimpleNamespace(
            text_encoder=self.encoders[0], tokenizer=Tokens(self.device),
            tokenizer_2=Tokens(self.device), text_encoder_2=self.encoders[1] if self.sdxl
            else None, text_encoders=tuple(self.encoders), is_sdxl=self.sdxl)
        self.unet = build(configs, "unet", self.dtype, self.device.type)
        models.add_lora(self.unet, self.cfg)  # the trainer's own LoRA setup (fp32 LoRA weights)
        if s.train_text_encoder:
            models.add_text_lora(self.base, self.cfg)
        self.params = trainable(self.unet)
        self.text_params = [p for te in self.encoders for p in trainable(te)]
        self.meter = LiveBytes()
        for p in self.params + self.text_params:  # gradients count as such once made
            p.register_post_accumulate_grad_hook(
                lambda p: self.meter.move(p.grad, "gradients"))
        self.context = sum(te.config.hidden_size for te in self.encoders)

    def randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, device=self.device)

    def cached_text(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n captions' text conditioning as cached (hidden states, SDXL's pooled embedding),
        in fp32 as training/cache.py stores it."""
        return self.randn(n, TOKENS, self.context), (
            self.randn(n, self.encoders[-1].config.projection_dim) if self.sdxl else None)

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
            groups = param_groups([p for k, p in one.items() if k[2] == 0],
                                  [p for k, p in one.items() if k[2] == 1])
            update, state_of = optimizer_update(s, train_config(s), list(one.values()), groups,
                                                [])
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
        the fp32 VAE joins the trained UNet; the text encoders encode the prompts only when they
        are on the card anyway (text that changes per step), otherwise the prompts were encoded
        once after caching (sampling.encode_prompts); the UNet denoises a batch of 2 (prompt
        and negative prompt), then the VAE decodes one latent in fp32, in tiles when large
        (sampling.vae_tiles). The same for every batch, checkpointing and optimizer."""
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
            meter.reset_peak()
            with meter, torch.no_grad():
                if s.live_text:
                    text, pooled = cache.encode_text(self.base, ["a", "b"], self.device)
                else:  # encoded before: the conditioning of prompt and negative prompt
                    text, pooled = (t if t is None else t.to(self.dtype)
                                    for t in self.cached_text(2))
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
