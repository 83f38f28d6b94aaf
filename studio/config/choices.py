"""The choices of TrainConfig's enumerated settings (precision, schedule, optimizer, targets…)."""

from __future__ import annotations

import enum


class Precision(enum.StrEnum):
    auto = "auto"  # bf16 on CUDA when supported, else fp16 on CUDA; full fp32 on CPU
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


class PredictionType(enum.StrEnum):
    auto = "auto"  # what the base model's scheduler config says
    epsilon = "epsilon"
    v_prediction = "v_prediction"


class LrSchedule(enum.StrEnum):
    constant = "constant"
    cosine = "cosine"
    linear = "linear"
    polynomial = "polynomial"


class Optimizer(enum.StrEnum):
    adamw = "adamw"
    adamw8bit = "adamw8bit"  # bitsandbytes, CUDA only
    prodigy = "prodigy"  # learning-rate-free (Mishchenko & Defazio 2023): use learning_rate 1.0
    adafactor = "adafactor"


class TargetPreset(enum.StrEnum):
    attention = "attention"  # to_q, to_k, to_v, to_out.0: the usual choice for style
    attention_ff = "attention_ff"  # + feed-forward and proj_in/proj_out: kohya's default set
    custom = "custom"  # exactly the names in target_modules


class CaptionStyle(enum.StrEnum):
    auto = "auto"
    tags = "tags"
    sentences = "sentences"


class SaveDtype(enum.StrEnum):
    fp16 = "fp16"  # what other tools expect; bf16 is unreadable for some (lora-formats.md §6)
    fp32 = "fp32"


class BaseQuantization(enum.StrEnum):
    none = "none"  # frozen UNet in the compute precision
    int8 = "int8"  # torchao int8 weight-only: any device, CPU included
    nf4 = "nf4"  # bitsandbytes 4-bit NormalFloat (QLoRA, Dettmers et al. 2023): NVIDIA GPUs
    fp8 = "fp8"  # torchao float8 weight-only: NVIDIA RTX 40 / Ada (compute capability 8.9) or newer
