"""Which training settings fit a GPU: the planner's inputs and results, the margin, "Fit to my GPU".

Pure Python (no torch), so the window and the worker share it: `training/memory_plan.py`
predicts a `Plan` for `MemorySettings` by counting one training step on meta tensors; this
module turns plans into decisions. `fit()` walks the levers from fastest to slowest and returns
the first settings whose plan, with the safety margin, fits the card.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

GIB = 1024**3
PLANNER_VERSION = 4  # bump when predictions change, so cached plans are recomputed

# What a card holds besides torch's allocations (max_memory_allocated): the CUDA context and
# cuBLAS/cuDNN workspaces (≈ 0.3-0.6 GiB on torch 2.x with lazy module loading), plus the
# allocator's cached-but-unused blocks (reserved - allocated, typically 5-15 % in a training
# loop). On Windows the desktop also takes a few hundred MB of a display card.
CONTEXT_BYTES = int(0.6 * GIB)
FRAGMENTATION = 0.10
SAFETY = 0.05  # of the card: other programs, driver differences, our own error

# The frozen base UNet: as computed (bf16/fp16), fp8 or int8 (torchao, 1 byte a weight), NF4
# (bitsandbytes); in TrainConfig.base_quantization's spelling. fp8 before int8: same bytes, but
# fp8 matmuls run on Ada/Hopper tensor cores while int8 weight-only dequantizes every call.
QUANTIZATIONS = ("none", "fp8", "int8", "nf4")
PRECISIONS = ("fp32", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy", "adafactor")
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")

# Above this many pixels the trainer's VAE works on one image at a time (caching) and decodes a
# sample in tiles: the fp32 SDXL VAE encode peaks at 2.5 GiB for one 1024² image and 5.0 GiB for
# two (measured on the CPU, issue 17 item 3), so four at a time (~10 GiB) ran 8-10 GB cards out
# of memory before the first step; its 1024² decode is as large. training/cache.py,
# training/sampling.py and the planner all ask these two functions.
ONE_AT_A_TIME_PIXELS = 768 * 768
ENCODE_BATCH = 4
# The tile a large sample is decoded in (diffusers AutoencoderKL.enable_tiling, whose default
# tile is the VAE's own sample_size, 1024 px for SDXL: no tiling at 1024 px). 512 px tiles with
# diffusers' 25 % overlap, as the "tiled VAE" low-memory options of A1111/ComfyUI do.
VAE_TILE_PX = 512


def encode_batch(width: int, height: int) -> int:
    """How many images of this size one VAE encode call takes while caching latents."""
    return 1 if width * height > ONE_AT_A_TIME_PIXELS else ENCODE_BATCH


def sample_vae_tile(width: int, height: int) -> int:
    """The tile size (px) a sample of this size is decoded in; 0: decoded whole."""
    return VAE_TILE_PX if width * height > ONE_AT_A_TIME_PIXELS else 0


@dataclass(frozen=True)
class MemorySettings:
    """Everything the planner needs to know about one training setup (sizes in pixels)."""
    model: str  # a diffusers folder holding unet/, vae/, text_encoder*/ config.json
    width: int = 512  # the largest bucket (by area) the dataset trains at
    height: int = 512
    batch_size: int = 1
    rank: int = 16
    targets: tuple[str, ...] = ATTENTION
    precision: str = "bf16"  # compute precision (autocast); frozen weights are stored in it
    gradient_checkpointing: bool = False
    train_text_encoder: bool = False
    live_text: bool = False  # captions vary per step: the text encoders stay on the GPU (fp32)
    optimizer: str = "adamw"
    quantization: str = "none"
    gradient_accumulation: int = 1
    sample_size: int = 512  # samples render square at this size; 0 = no sampling
    encode_batch: int = 4  # images per VAE encode while caching latents
    # The bucket of the largest of those encode calls when it is not width x height (0: it is):
    # 768² images 4 at a time take more than one 1024² image (see encoding).
    encode_width: int = 0
    encode_height: int = 0
    images: int = 0  # dataset images whose cached latents (and texts) are kept on the GPU
    device: str = "cuda"  # "cpu": CPU autocast rules (to compare with a real CPU step)

    def replace(self, **changes) -> "MemorySettings":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "MemorySettings":
        return cls(**{**d, "targets": tuple(d.get("targets", ATTENTION))})


@dataclass(frozen=True)
class Plan:
    """Predicted peak GPU bytes (as torch.cuda.max_memory_allocated counts them) and where."""
    training_bytes: int  # one optimizer step: forward, backward, optimizer update
    caching_bytes: int  # encoding the dataset with the VAE (and text encoders) before training
    sampling_bytes: int  # rendering a sample image mid-run (0 = no sampling)
    parts: dict = field(default_factory=dict)  # bytes by kind at the training peak
    settings: MemorySettings | None = None
    saved_bytes: int = 0  # activations live at the end of the forward pass (kept for backward)

    @property
    def peak_bytes(self) -> int:
        return max(self.training_bytes, self.caching_bytes, self.sampling_bytes)

    @property
    def limit(self) -> str:
        """The phase that sets the peak: "training", "caching" or "sampling"."""
        phases = {"training": self.training_bytes, "caching": self.caching_bytes,
                  "sampling": self.sampling_bytes}
        return max(phases, key=phases.get)

    def to_json(self) -> dict:
        return {"version": PLANNER_VERSION, "training_bytes": self.training_bytes, "caching_bytes": self.caching_bytes,
                "sampling_bytes": self.sampling_bytes, "peak_bytes": self.peak_bytes,
                "needed_bytes": needed_bytes(self), "limit": self.limit, "parts": self.parts,
                "saved_bytes": self.saved_bytes,
                "settings": self.settings.to_json() if self.settings else None}

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        settings = MemorySettings.from_json(d["settings"]) if d.get("settings") else None
        return cls(d["training_bytes"], d["caching_bytes"], d["sampling_bytes"],
                   dict(d.get("parts", {})), settings, d.get("saved_bytes", 0))


def needed_bytes(plan: Plan) -> int:
    """What the card must have free for this plan: the peak, allocator slack, CUDA context."""
    return int(plan.peak_bytes * (1 + FRAGMENTATION)) + CONTEXT_BYTES


def fits(plan: Plan, gpu_bytes: int) -> bool:
    return needed_bytes(plan) <= gpu_bytes * (1 - SAFETY)


def live_text(caption_dropout: float, shuffle_tags: bool, tag_dropout: float,
              train_text_encoder: bool) -> bool:
    """Whether the text encoders run every step (and so stay on the GPU): the rule of
    training/data.py (captions that change per step, or a trained text encoder)."""
    return caption_dropout > 0 or shuffle_tags or tag_dropout > 0 or train_text_encoder


SHORT_NAMES = {"sd15": "sd15", "sd1": "sd15", "sd2": "sd2-base", "sd2-base": "sd2-base",
               "sd2-v": "sd2-v", "sdxl": "sdxl-base", "sdxl-base": "sdxl-base"}


def model_folder(value: str, project_root: Path | None = None) -> Path:
    """A folder of component configs for a base-model setting: a short name (sd15, sdxl), a
    diffusers folder, a Hub id in the local cache, or a single .safetensors checkpoint (its
    architecture's shipped config folder). Raises FileNotFoundError when there is none."""
    from studio.base_model import configs, detect, inspect

    if value in SHORT_NAMES:
        return configs.ASSETS_CONFIGS / SHORT_NAMES[value]
    try:  # the worker's own lookup (a path, relative to the project, or a cached Hub id)
        path, _ = inspect.locate(value, project_root)
    except detect.BaseModelRefused as exc:
        raise FileNotFoundError(f"No model configs found for {value!r}: {exc}") from None
    if path.is_file():
        found = detect.detect(path)
        return configs.config_folder(found.architecture, found.prediction_type)
    if (path / "unet" / "config.json").is_file():
        return path
    raise FileNotFoundError(f"No model configs found for {value!r}: give a diffusers folder, a "
                            f"single .safetensors file, or one of {', '.join(SHORT_NAMES)}.")


def project_settings(cfg, project_root: Path, items: list, precision: str = "bf16"
                     ) -> MemorySettings:
    """The MemorySettings a project trains with: its model's configs, the largest bucket of its
    training images (studio.dataset Items, held-out ones included: they are cached too) and
    their count. The worker (training/memory_plan.py) and the Train tab both call this."""
    from studio.dataset import plan

    sizes = plan.bucket_sizes([it.size for it in items], cfg)
    return settings_for(cfg, str(model_folder(cfg.base_model, project_root)), sizes, len(items),
                        precision)


def cached(cache_dir: Path, wanted: list[MemorySettings]) -> Plan | None:
    """A plan predicted before for any of `wanted`, from cache_dir/memory/*.json (what
    training/memory_plan.predict writes), matched by its settings: no torch needed, so the
    window shows a known plan at once. Damaged files and older planner versions are skipped."""
    folder = Path(cache_dir) / "memory"
    try:
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for path in files:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("version", 1) != PLANNER_VERSION or not d.get("settings"):
                continue
            plan = Plan.from_json(d)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if plan.settings in wanted:
            return plan
    return None


def settings_for(cfg, model: str, buckets: list[tuple[int, int]], images: int = 0,
                 precision: str = "bf16") -> MemorySettings:
    """MemorySettings for a TrainConfig; `buckets` are the dataset's (width, height) buckets
    (the largest by area sets the peak); `precision` is what "auto" becomes on the card."""
    from studio.config import unet_targets

    width, height = max(buckets or [(cfg.resolution, cfg.resolution)],
                        key=lambda wh: (wh[0] * wh[1], wh))
    mixed = cfg.mixed_precision.value
    prec = {"no": "fp32", "auto": precision}.get(mixed, mixed)
    samples = cfg.sample_every_n_epochs or cfg.sample_every_n_steps
    return MemorySettings(
        model=model, width=width, height=height, batch_size=cfg.batch_size, rank=cfg.rank,
        targets=tuple(unet_targets(cfg)), precision=prec,
        gradient_checkpointing=cfg.gradient_checkpointing,
        train_text_encoder=cfg.train_text_encoder,
        live_text=live_text(cfg.caption_dropout, cfg.shuffle_tags, cfg.tag_dropout,
                            cfg.train_text_encoder),
        optimizer=cfg.optimizer.value, quantization=str(cfg.base_quantization.value),
        gradient_accumulation=cfg.gradient_accumulation_steps,
        sample_size=cfg.resolution if samples else 0, images=images,
        **encoding(buckets, width, height))


def encoding(buckets: list[tuple[int, int]], width: int, height: int) -> dict:
    """MemorySettings' encode fields for a dataset whose largest bucket is width x height: the
    largest VAE encode call caching makes. It encodes each bucket's images together,
    encode_batch(size) at a time (training/cache.py), so the largest bucket is not always the
    largest call."""
    w, h, n = max(((w, h, encode_batch(w, h)) for w, h in set(buckets or [(width, height)])),
                  key=lambda c: (c[0] * c[1] * c[2], c[0] * c[1], c))
    same = (w, h) == (width, height)
    return dict(encode_batch=n, encode_width=0 if same else w, encode_height=0 if same else h)


@dataclass(frozen=True)
class Fit:
    settings: MemorySettings | None  # None: nothing fits
    plan: Plan | None  # the plan of `settings`, or of the tried candidate that needs least
    changes: dict  # setting -> new value, relative to the settings asked for
    tried: int  # candidates predicted
    limit: str = ""  # nothing fits: the phase no lever shrinks enough (see NOTHING_FITS)
    need: int = 0  # nothing fits: the least that phase needs on the card

    @property
    def ok(self) -> bool:
        return self.settings is not None

    def to_json(self, quantizations: tuple[str, ...] = QUANTIZATIONS) -> dict:
        """What `plan-memory --json` reports and the Train tab reads."""
        return {"ok": self.ok, "changes": self.changes, "tried": self.tried,
                "quantizations": list(quantizations),
                "set": [f"{CONFIG_NAMES[k]}={str(v).lower()}" for k, v in self.changes.items()],
                "plan": self.plan.to_json() if self.plan else None,
                "needed_bytes": needed_bytes(self.plan) if self.ok else self.need,
                "limit": self.limit}


# What the artist can change when a phase is too big and no lever helps, and how the sentence
# names that phase; the CLI and the Train tab both say these (`nothing_fits`, the panel's
# verdict).
WHAT_TO_CHANGE = {
    "training": "lower the resolution or the rank",
    "caching": "lower the resolution",
    "sampling": "turn samples off (sample every 0 epochs and 0 steps) or lower the resolution",
}
NOTHING_FITS = {
    "training": "the smallest setup tried needs",
    "caching": "caching the images before training needs, whatever the settings,",
    "sampling": "the sample images shown during training need, with every setting,",
}


def nothing_fits(fit: dict, gpu_bytes: int, card: str, size: Callable[[int], str]) -> str:
    """The sentence for a fit (`Fit.to_json`) that found nothing; `size` formats bytes."""
    limit = fit.get("limit") or "training"
    need, usable = size(fit.get("needed_bytes") or 0), size(int(gpu_bytes * (1 - SAFETY)))
    over = "just over" if need == usable else "more than"
    return (f"Nothing LoRA Studio can change fits {card}: {NOTHING_FITS[limit]} ≈ {need}, "
            f"{over} the {usable} it can use ({SAFETY:.0%} is kept free). "
            f"{WHAT_TO_CHANGE[limit].capitalize()}.")


def candidates(s: MemorySettings, quantizations: tuple[str, ...] = QUANTIZATIONS
               ) -> list[MemorySettings]:
    """Settings to try, fastest first. Levers, in order of what they cost:
    1. gradient checkpointing (≈ 20-30 % slower steps), only when the same batch does not fit;
    2. a smaller batch, halved each time, with gradient accumulation keeping the effective batch
       (fewer images per kernel launch: slower per image, same training);
    3. Adafactor instead of AdamW/Prodigy (no per-weight moments; changes the optimizer);
    4. a quantized frozen base last (fp8, int8, then NF4): dequantizing every layer costs time
       and some precision."""
    batches = []
    b = s.batch_size
    while b >= 1:
        batches.append(b)
        b = b // 2 if b > 1 else 0
    optimizers = [s.optimizer] + (["adafactor"] if s.optimizer in ("adamw", "prodigy") else [])
    quants = [q for q in QUANTIZATIONS[QUANTIZATIONS.index(s.quantization):]
              if q in quantizations or q == s.quantization]
    effective = s.batch_size * s.gradient_accumulation
    out = []
    for quant in quants:
        for optimizer in optimizers:
            for batch in batches:
                for ckpt in ([False, True] if not s.gradient_checkpointing else [True]):
                    out.append(s.replace(quantization=quant, optimizer=optimizer,
                                         batch_size=batch, gradient_checkpointing=ckpt,
                                         gradient_accumulation=max(1, effective // batch)))
    return out


def _changes(old: MemorySettings, new: MemorySettings) -> dict:
    names = ("batch_size", "gradient_accumulation", "gradient_checkpointing", "optimizer",
             "quantization")
    return {n: getattr(new, n) for n in names if getattr(new, n) != getattr(old, n)}


BOUND_SLACK = 0.05


def at_least(plan: Plan, batch: int, smaller: int) -> Plan:
    """What `plan` (predicted at `batch`) needs at least at a `smaller` batch with the same
    other settings. Only activations grow with the batch, and at most in proportion (each
    image's own plus what every batch shares), so the peak's activations shrink by at most
    that share; weights, LoRA, gradients, optimizer state, caching and sampling stay. Less
    5 %: every block is rounded up to 512 B, which a smaller batch's tensors feel more
    (SD1.5 and SDXL plans at batch 1-8 come within 1.2 % of the proportional share)."""
    act = plan.parts.get("activations", 0)
    least = int(act * smaller / batch * (1 - BOUND_SLACK))
    return dataclasses.replace(plan, training_bytes=plan.training_bytes - act + least)


def fit(s: MemorySettings, gpu_bytes: int, predict: Callable[[MemorySettings], Plan],
        quantizations: tuple[str, ...] = QUANTIZATIONS) -> Fit:
    """The fastest candidate (see `candidates`) whose plan fits `gpu_bytes` with the margin;
    `quantizations` limits the base quantizations offered (those the trainer can run here).
    Candidates that cannot fit are not predicted: caching depends on no lever, so when it
    alone is too big nothing fits; sampling depends only on the base's quantization and the
    optimizer (what stays on the card), so a sample too big for one (quantization, optimizer)
    rules out every batch and checkpointing with them; a smaller batch whose least need
    (`at_least` the last plan with its other levers) does not fit is skipped, except the
    last candidate. When nothing fits, the Fit says which phase stayed too big."""
    tried, blocked, last, best, sampling = 0, set(), {}, None, 0
    listed = candidates(s, quantizations)
    for cand in listed:
        group = (cand.quantization, cand.optimizer)
        if group in blocked:
            continue
        levers = (*group, cand.gradient_checkpointing)
        if levers in last and cand is not listed[-1] and not fits(
                at_least(last[levers][1], last[levers][0], cand.batch_size), gpu_bytes):
            continue
        plan, tried = predict(cand), tried + 1
        last[levers] = (cand.batch_size, plan)
        if fits(plan, gpu_bytes):
            return Fit(cand, plan, _changes(s, cand), tried)
        if best is None or needed_bytes(plan) < needed_bytes(best):
            best = plan
        caching = Plan(0, plan.caching_bytes, 0)
        if not fits(caching, gpu_bytes):
            return Fit(None, plan, {}, tried, "caching", needed_bytes(caching))
        alone = Plan(0, 0, plan.sampling_bytes)
        if not fits(alone, gpu_bytes):
            blocked.add(group)
            sampling = min(sampling or needed_bytes(alone), needed_bytes(alone))
    if blocked and blocked >= {(c.quantization, c.optimizer) for c in listed}:
        return Fit(None, best, {}, tried, "sampling", sampling)
    return Fit(None, best, {}, tried, "training", needed_bytes(best) if best else 0)


# Settings names as TrainConfig spells them (for `--set`, presets and the GUI's fix buttons).
CONFIG_NAMES = {"batch_size": "batch_size", "gradient_accumulation": "gradient_accumulation_steps",
                "gradient_checkpointing": "gradient_checkpointing", "optimizer": "optimizer",
                "quantization": "base_quantization"}
