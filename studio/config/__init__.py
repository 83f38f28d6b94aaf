"""TrainConfig: the one definition of every training setting (form, CLI, TOML files and run records)."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from studio.config.choices import (BaseQuantization, CaptionStyle, LrSchedule, Optimizer,
                                   Precision, PredictionType, SaveDtype, TargetPreset)
from studio.config.schema import SCHEMA_VERSION, migrate  # config.SCHEMA_VERSION: used as is
from studio.paths import MAX_NAME_BYTES, name_problem

# The longest name a run writes: a step LoRA file (training/train.py) while studio/atomic.py
# writes it, 7-digit steps. Checked up front, not at the final save (issue 13).
LONGEST_WRITTEN = ".{}-step0000000.safetensors.abcdefgh.tmp"


def option(default: Any, label: str, help: str, group: str, *, minimum: float | None = None,
           maximum: float | None = None, step: float | None = None, advanced: bool = False,
           log_scale: bool = False) -> Any:
    """A config field with everything a form, the CLI and the docs need to present it."""
    meta = dict(label=label, help=help, group=group, minimum=minimum, maximum=maximum, step=step,
                advanced=advanced, log_scale=log_scale)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    # --- Base model -------------------------------------------------------------------------
    base_model: str = option(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", "Base model",
        "The Stable Diffusion model the LoRA is trained on: a diffusers model folder, or a Hub id "
        "already in the local cache. Relative paths are relative to the project folder.", "Model")
    prediction_type: PredictionType = option(
        PredictionType.auto, "Prediction type",
        "What the base model predicts. 'auto' reads it from the model's scheduler config; set it "
        "only for v-prediction fine-tunes whose config says otherwise.", "Model", advanced=True)

    # --- Dataset ----------------------------------------------------------------------------
    dataset_dir: str = option(
        "dataset", "Dataset folder",
        "Folder of training images with same-name .txt or .caption files. Relative paths are "
        "relative to the project folder. It is only read, never changed.", "Dataset")
    exclude_images: tuple[str, ...] = option(
        (), "Excluded images",
        "File names in the dataset folder left out of training (they stay on disk untouched).",
        "Dataset", advanced=True)
    trigger_word: str = option(
        "", "Trigger word",
        "A rare word put in front of every caption, so that you can call the style in prompts.",
        "Dataset")
    resolution: int = option(
        512, "Resolution",
        "Training size in pixels: images train at about this many pixels squared, in the aspect "
        "ratio bucket closest to their shape. 512 for SD1.5.", "Dataset", minimum=32,
        maximum=2048, step=8)
    repeats: int = option(
        1, "Repeats",
        "How often each image of the dataset folder is seen per epoch. Subfolders named like "
        "'10_name' (kohya style) use their own number.", "Dataset", minimum=1, maximum=1000, step=1)
    enable_buckets: bool = option(
        True, "Aspect-ratio buckets",
        "Train each image at the shape closest to its own instead of cropping everything square.",
        "Dataset", advanced=True)
    bucket_step: int = option(
        64, "Bucket step", "Bucket sides are multiples of this many pixels.", "Dataset",
        minimum=8, maximum=256, step=8, advanced=True)
    min_bucket_side: int = option(
        256, "Smallest bucket side", "No bucket side is shorter than this (pixels).", "Dataset",
        minimum=32, maximum=4096, step=8, advanced=True)
    max_bucket_side: int = option(
        1024, "Largest bucket side", "No bucket side is longer than this (pixels).", "Dataset",
        minimum=32, maximum=4096, step=8, advanced=True)
    upscale_small_images: bool = option(
        False, "Upscale small images",
        "Enlarge images smaller than their bucket. Off: they train in a smaller bucket instead, "
        "since upscaled images teach blur.", "Dataset", advanced=True)
    flip_horizontal: bool = option(
        False, "Flip horizontally",
        "Also train on mirror images (doubles the variety; avoid for asymmetric styles or text).",
        "Dataset", advanced=True)

    # --- Captions ---------------------------------------------------------------------------
    caption_style: CaptionStyle = option(
        CaptionStyle.auto, "Caption style",
        "Tags (comma-separated keywords) can be shuffled and dropped one by one; sentences are "
        "kept whole. 'auto' decides from the captions.", "Captions", advanced=True)
    shuffle_tags: bool = option(
        False, "Shuffle tags", "Shuffle tag captions every step so no tag position is learned.",
        "Captions", advanced=True)
    keep_tags: int = option(
        0, "Keep first tags",
        "This many leading tags (after the trigger word) are never shuffled or dropped.",
        "Captions", minimum=0, maximum=50, step=1, advanced=True)
    tag_dropout: float = option(
        0.0, "Tag dropout", "Chance that each tag is left out in a step (tag captions only).",
        "Captions", minimum=0.0, maximum=1.0, step=0.05, advanced=True)
    caption_dropout: float = option(
        0.0, "Caption dropout",
        "Chance that a step uses only the trigger word, which ties the style to it more firmly.",
        "Captions", minimum=0.0, maximum=1.0, step=0.05, advanced=True)

    # --- LoRA -------------------------------------------------------------------------------
    rank: int = option(
        16, "Rank",
        "Size of the LoRA matrices. Higher learns more detail but makes bigger files; style LoRAs "
        "rarely need more than 32.", "LoRA", minimum=1, maximum=256, step=1)
    alpha: float = option(
        16.0, "Alpha",
        "Scales the LoRA's effect by alpha / rank. Equal to the rank is neutral; half the rank "
        "trains more gently.", "LoRA", minimum=0.01, maximum=1024.0, step=1.0)
    target_preset: TargetPreset = option(
        TargetPreset.attention, "Layers trained",
        "Which UNet layers get a LoRA: the attention projections (style, small files), "
        "attention plus feed-forward and projections (kohya's set: more capacity, twice the "
        "size), or your own list.", "LoRA", advanced=True)
    target_modules: tuple[str, ...] = option(
        ("to_q", "to_k", "to_v", "to_out.0"), "Custom layers",
        "UNet layer names that get a LoRA when 'Layers trained' is custom.", "LoRA",
        advanced=True)
    train_text_encoder: bool = option(
        False, "Train the text encoder",
        "Also give the text encoder(s) a LoRA. Rarely needed for style; makes the trigger word "
        "stronger and the file bigger.", "LoRA", advanced=True)
    text_encoder_lr: float = option(
        5e-5, "Text encoder learning rate",
        "Learning rate of the text-encoder LoRA (usually lower than the UNet's).", "LoRA",
        minimum=1e-7, maximum=1e-1, log_scale=True, advanced=True)

    # --- Training ---------------------------------------------------------------------------
    optimizer: Optimizer = option(
        Optimizer.adamw, "Optimizer",
        "AdamW is the safe default. AdamW 8-bit saves GPU memory (NVIDIA GPUs only). Prodigy "
        "finds its own step size (set Learning rate to 1). Adafactor uses the least memory.",
        "Training", advanced=True)
    epochs: int = option(
        10, "Epochs", "How many times training goes through the whole dataset (when Max steps is 0).",
        "Training", minimum=1, maximum=10_000, step=1)
    max_steps: int = option(
        0, "Max steps",
        "Stop after this many optimizer steps. 0 means: use Epochs instead.", "Training",
        minimum=0, maximum=1_000_000, step=100)
    batch_size: int = option(
        1, "Batch size", "Images per step. Larger batches need more GPU memory.", "Training",
        minimum=1, maximum=64, step=1)
    gradient_accumulation_steps: int = option(
        1, "Gradient accumulation",
        "Add up the gradients of this many batches before each optimizer step: a larger effective "
        "batch without more memory.", "Training", minimum=1, maximum=128, step=1, advanced=True)
    learning_rate: float = option(
        1e-4, "Learning rate",
        "Step size of the optimizer. 1e-4 is a safe start for style LoRAs; lower it if samples "
        "burn or the loss jumps. With Prodigy it is a multiplier: 1.0 (range 0.001 to 10).",
        "Training", minimum=1e-7, maximum=1e-1, log_scale=True)
    lr_scheduler: LrSchedule = option(
        LrSchedule.constant, "LR schedule",
        "How the learning rate changes over the run (after the warmup steps).", "Training",
        advanced=True)
    lr_warmup_steps: int = option(
        0, "Warmup steps", "Optimizer steps over which the learning rate ramps up from 0.",
        "Training", minimum=0, maximum=100_000, step=10, advanced=True)
    weight_decay: float = option(
        1e-2, "Weight decay", "AdamW weight decay on the LoRA weights.", "Training",
        minimum=0.0, maximum=1.0, step=0.01, advanced=True)
    max_grad_norm: float = option(
        1.0, "Max gradient norm", "Clip gradients to this norm (0 turns clipping off).", "Training",
        minimum=0.0, maximum=100.0, step=0.1, advanced=True)
    seed: int = option(
        42, "Seed", "Same seed, same data and same settings give the same LoRA (exactly, on CPU).",
        "Training", minimum=0, maximum=2**32 - 1, step=1)
    min_snr_gamma: float = option(
        5.0, "Min-SNR gamma",
        "Balances the loss over noise levels (Hang et al. 2023, 'Efficient Diffusion Training via "
        "Min-SNR Weighting'); 5 suits style. 0 turns it off.", "Training", minimum=0.0,
        maximum=20.0, step=0.5, advanced=True)
    noise_offset: float = option(
        0.0, "Noise offset",
        "Adds a little overall brightness noise so the LoRA can learn very dark or very bright "
        "images; 0.05 is a common value.", "Training", minimum=0.0, maximum=1.0, step=0.01,
        advanced=True)

    # --- Validation and samples -------------------------------------------------------------
    validation_images: int = option(
        -1, "Validation images",
        "Images held out of training to measure a validation loss each epoch. -1: 5% (at least "
        "2) when the dataset has 20 or more images, else none.", "Validation",
        minimum=-1, maximum=1000, step=1)
    sample_every_n_epochs: int = option(
        1, "Samples every N epochs", "Render sample images every N epochs (0: never).",
        "Validation", minimum=0, maximum=10_000, step=1)
    sample_every_n_steps: int = option(
        0, "Samples every N steps", "Also render samples every N steps (0: never).",
        "Validation", minimum=0, maximum=1_000_000, step=50, advanced=True)
    sample_prompts: tuple[str, ...] = option(
        (), "Sample prompts",
        "Prompts rendered during training, each with and without the trigger word. Empty: two "
        "captions from the dataset.", "Validation", advanced=True)
    sample_steps: int = option(
        20, "Sample steps", "Denoising steps per sample image.", "Validation", minimum=1,
        maximum=150, step=1, advanced=True)
    sample_cfg_scale: float = option(
        7.0, "Sample CFG scale", "How strongly samples follow the prompt.", "Validation",
        minimum=1.0, maximum=30.0, step=0.5, advanced=True)
    evaluate_after_training: bool = option(True, "Report card after training", "When a run ends, "
        "judge each LoRA file against the base model: style match, prompt fidelity, copy risk "
        "(needs validation images; Train tab ▸ Report card).", "Validation")
    quick_report_card: bool = option(
        False, "Quick report card",
        "The card after training judges each LoRA file on the samples rendered during training "
        "and renders only the base model: a rough card in a fraction of the time (the demo: 11 s "
        "instead of 2 minutes). Off: the held-out captions are rendered for every file.",
        "Validation", advanced=True)

    # --- Performance ------------------------------------------------------------------------
    mixed_precision: Precision = option(
        Precision.auto, "Mixed precision",
        "Compute in 16-bit on the GPU (LoRA weights stay 32-bit). 'auto' picks bf16 where the GPU "
        "supports it, else fp16, and full precision on CPU.", "Performance", advanced=True)
    gradient_checkpointing: bool = option(
        False, "Gradient checkpointing",
        "Recompute activations in the backward pass: much less GPU memory, about 20% slower.",
        "Performance", advanced=True)
    base_quantization: BaseQuantization = option(
        BaseQuantization.none, "Base model quantization",
        "Store the frozen base UNet in fewer bits to save GPU memory (the LoRA itself still trains "
        "and saves in full precision; steps get somewhat slower). int8: needs the torchao package, "
        "works everywhere, CPU included. nf4 (QLoRA): needs bitsandbytes and an NVIDIA GPU. fp8: "
        "needs torchao and an NVIDIA RTX 40 (Ada) or newer GPU.", "Performance", advanced=True)
    compile_unet: bool = option(
        False, "Compile the UNet", "torch.compile on the UNet's transformer blocks (CUDA only; "
        "ignored on the CPU). The first steps take longer while it compiles.", "Performance",
        advanced=True)
    channels_last: bool = option(
        False, "Channels-last memory layout", "Store the UNet's convolution inputs channels-last, "
        "which tensor cores prefer (CUDA only; ignored on the CPU).", "Performance", advanced=True)
    cpu_threads: int = option(
        0, "CPU threads",
        "Torch threads when training on the CPU. 0 picks half the cores (one on a 2-core machine, "
        "where two threads are many times slower).", "Performance", minimum=0, maximum=256,
        step=1, advanced=True)

    # --- Output -----------------------------------------------------------------------------
    output_name: str = option(
        "my-style", "Output name",
        "File name of the LoRA (without .safetensors); also the name other apps show.", "Output")
    save_every_n_steps: int = option(
        0, "LoRA file every N steps",
        "Also save a LoRA file every N steps (in the run's loras/ folder), to compare stages of "
        "training (0: only at the end). Each one comes with a resume point.",
        "Output", minimum=0, maximum=1_000_000, step=50)
    save_every_n_epochs: int = option(  # the rows of the Generate tab's epoch grid
        -1, "LoRA file every N epochs", "Save a LoRA file every N epochs (-1: auto, every epoch "
        "up to 20 epochs, else ~20 files; 0: never).", "Output", minimum=-1, maximum=10_000, step=1)
    resume_point_every_minutes: float = option(
        10.0, "Resume point every N minutes",
        "Save everything needed to resume (LoRA, optimizer, position) at least this often, so a "
        "crash or power cut loses little. 0: only with the step LoRA files and on stop.",
        "Output", minimum=0.0, maximum=1440.0, step=1.0, advanced=True)
    keep_resume_points: int = option(
        3, "Resume points kept", "How many of the newest resume points to keep on disk.",
        "Output", minimum=1, maximum=100, step=1, advanced=True)
    save_dtype: SaveDtype = option(
        SaveDtype.fp16, "Save precision",
        "Precision of the saved LoRA. fp16 is what other apps expect and half the size.", "Output",
        advanced=True)
    export_diffusers: bool = option(
        False, "Also save diffusers format",
        "Also write the diffusers/PEFT file (pytorch_lora_weights.safetensors) beside the main "
        "file, for scripts that use diffusers directly.", "Output", advanced=True)
    author: str = option("", "Author", "Your name, stored in the file's metadata.", "Output",
                         advanced=True)
    description: str = option("", "Description", "A description stored in the file's metadata.",
                              "Output", advanced=True)

    # --- Bookkeeping ------------------------------------------------------------------------
    schema: int = option(SCHEMA_VERSION, "Schema", "Version of this file's layout.", "Internal",
                         advanced=True)


TARGETS = {
    TargetPreset.attention: ("to_q", "to_k", "to_v", "to_out.0"),
    # kohya's LoRA on Transformer2DModel blocks: attention, feed-forward and the 1x1/linear
    # projections in and out (sd-scripts networks/lora.py; lora-formats.md §1).
    TargetPreset.attention_ff: ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2",
                                "proj_in", "proj_out"),
}


def unet_targets(cfg: "TrainConfig") -> tuple[str, ...]:
    """The UNet module names that get a LoRA under this config."""
    return TARGETS.get(cfg.target_preset, cfg.target_modules)


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(ValueError):
    """Raised with every problem found, so a user can fix them all at once."""

    def __init__(self, problems: list[Problem], source: str = ""):
        self.problems = problems
        where = f" in {source}" if source else ""
        super().__init__(f"{len(problems)} problem(s){where}:\n" +
                         "\n".join(f"  - {p}" for p in problems))


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_type(name: str) -> type:
    """The runtime type of a field (annotations are strings under `from __future__`)."""
    return type(FIELDS[name].default) if FIELDS[name].default is not dataclasses.MISSING \
        else tuple


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def coerce(name: str, value: Any) -> Any:
    """Convert a TOML or command-line value to the field's type; raises ValueError with a reason."""
    kind = field_type(name)
    if issubclass(kind, enum.Enum):
        try:
            return kind(str(value))
        except ValueError:
            raise ValueError(f"must be one of {', '.join(m.value for m in kind)}, "
                             f"not {value!r}") from None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "yes", "on", "1", "false", "no",
                                                         "off", "0"}:
            return value.lower() in {"true", "yes", "on", "1"}
        raise ValueError(f"must be true or false, not {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            return int(value.replace("_", ""))
        raise ValueError(f"must be a whole number, not {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            return float(value)  # a string; "nan" parses, and validate refuses it
        raise ValueError(f"must be a number, not {value!r}")
    if kind is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(f"must be a list of names, not {value!r}")
    if isinstance(value, str):
        return value
    raise ValueError(f"must be text, not {value!r}")


def from_dict(data: dict[str, Any], base: TrainConfig | None = None, source: str = "") -> TrainConfig:
    """Build a config from TOML-like data over `base`; every unknown key and bad value is reported."""
    problems, values = [], {}
    for key, value in migrate(data).items():
        if key not in FIELDS:
            problems.append(Problem(key, "unknown setting" + _suggest(key)))
            continue
        try:
            values[key] = coerce(key, value)
        except ValueError as exc:
            problems.append(Problem(key, str(exc)))
    if values.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
        problems.append(Problem("schema", f"this file was written by a newer LoRA Studio "
                                          f"(schema {values['schema']}); please update"))
    if problems:
        raise ConfigError(problems, source)
    return dataclasses.replace(base or TrainConfig(), **values)


def parse_overrides(pairs: list[str], base: TrainConfig) -> TrainConfig:
    """Apply `key=value` strings from the command line, typed by the field."""
    data, problems = {}, []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            problems.append(Problem(pair, "expected key=value"))
        else:
            data[key.strip()] = value.strip()
    if problems:
        raise ConfigError(problems, "--set")
    return from_dict(data, base, "--set")


# Ranges that depend on another setting. Prodigy's learning rate multiplies the step size it
# estimates itself, so its customary value is 1.0 (Mishchenko & Defazio 2023, "Prodigy"; the
# prodigyopt README: "we recommend using lr=1."), far above AdamW's 0.1 ceiling.
RANGE_RULES = {("learning_rate", Optimizer.prodigy): (1e-3, 10.0)}


def value_range(name: str, cfg: TrainConfig) -> tuple[float | None, float | None]:
    """(minimum, maximum) of a setting under this config: the one range form, CLI and TOML use."""
    meta = FIELDS[name].metadata
    rule = RANGE_RULES.get((name, getattr(cfg, "optimizer", None)))
    return rule or (meta["minimum"], meta["maximum"])


def validate(cfg: TrainConfig) -> list[Problem]:
    """Every problem with a config (ranges from the field metadata plus cross-field rules)."""
    problems = []
    for name in FIELDS:
        value = getattr(cfg, name)
        low, high = value_range(name, cfg)
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every < and >
            problems.append(Problem(name, f"must be a finite number, not {value}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            under = f" with the {cfg.optimizer.value} optimizer" if (
                name, cfg.optimizer) in RANGE_RULES else ""
            if low is not None and value < low:
                problems.append(Problem(name, f"must be at least {low:g}{under}, not {value:g}"))
            if high is not None and value > high:
                problems.append(Problem(name, f"must be at most {high:g}{under}, not {value:g}"))
    if cfg.resolution % 8:
        problems.append(Problem("resolution", f"must be a multiple of 8 (the VAE halves the size "
                                              f"three times), not {cfg.resolution}"))
    if not cfg.base_model.strip():
        problems.append(Problem("base_model", "is empty: choose a model folder or Hub id"))
    if not cfg.target_modules:
        problems.append(Problem("target_modules", "needs at least one layer name"))
    if why := name_problem(cfg.output_name) or (
            "starts with a dot or a space" if cfg.output_name[:1] in ". " else None):
        problems.append(Problem("output_name", f"{cfg.output_name!r} {why}"))
    elif (extra := len(LONGEST_WRITTEN.format(cfg.output_name).encode()) - MAX_NAME_BYTES) > 0:
        problems.append(Problem("output_name", f"is too long: with \"-step000123.safetensors\" "
                        f"and a temporary suffix the run's file names pass the {MAX_NAME_BYTES}-"
                        f"byte limit of file systems; shorten it by {extra} bytes or more"))
    if cfg.trigger_word != cfg.trigger_word.strip() or "," in cfg.trigger_word:
        problems.append(Problem("trigger_word", "must not have surrounding spaces or commas"))
    return problems


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain TOML-ready values (enums as strings, tuples as lists)."""
    out = {}
    for name in FIELDS:
        value = getattr(cfg, name)
        out[name] = value.value if isinstance(value, enum.Enum) else \
            list(value) if isinstance(value, tuple) else value
    return out


def load(path: Path, base: TrainConfig | None = None) -> TrainConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(path.name, f"is not valid TOML: {exc}")], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(path.name, "is not UTF-8 text")], str(path)) from None
    return from_dict(data, base, str(path))


def to_toml(cfg: TrainConfig, commented: bool = True) -> str:
    """TOML text; with `commented`, each setting is preceded by its label, help and range."""
    values = to_dict(cfg)
    if not commented:
        return tomli_w.dumps(values)
    lines = ["# LoRA Studio training settings. Every key is optional: missing keys take the default.",
             ""]
    group = None
    for name, f in FIELDS.items():
        meta = f.metadata
        if meta["group"] != group:
            group = meta["group"]
            lines += [f"# ===== {group} =====", ""]
        lines.append(f"# {meta['label']}: {meta['help']}")
        kind = field_type(name)
        if issubclass(kind, enum.Enum):
            lines.append(f"# One of: {', '.join(m.value for m in kind)}.")
        elif meta["minimum"] is not None:
            lines.append(f"# Range: {meta['minimum']:g} to {meta['maximum']:g}.")
        lines.append(tomli_w.dumps({name: values[name]}).rstrip())
        lines.append("")
    return "\n".join(lines)
