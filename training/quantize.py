"""The frozen base UNet in fewer bits (int8/fp8 with torchao, NF4 with bitsandbytes): QLoRA.

Only the UNet's nn.Linear weights are quantized, after the UNet sits on its device in the compute
precision and before the LoRA is added: peft then wraps each quantized Linear in its own LoRA
layer (peft 0.21 tuners/lora/torchao.py `dispatch_torchao` for torchao tensors, tuners/lora/bnb.py
`dispatch_bnb_4bit` for bnb Linear4bit), whose LoRA weights are ordinary fp32 parameters. So the
exported LoRA file has the same keys, shapes and precision as without quantization (Dettmers et al.
2023, "QLoRA", §3: the adapter trains in full precision on a frozen 4-bit base).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings

import torch

from studio.config import BaseQuantization, TrainConfig
from studio.errors import UserError

log = logging.getLogger("training")
FIELD = "base_quantization"
TORCHAO_MIN = (0, 16)  # what peft 0.21.2 accepts (peft/import_utils.py is_torchao_available)
FP8_CAPABILITY = (8, 9)  # float8 tensor cores: Ada (RTX 40, L4, L40) and Hopper or newer


def _version(package: str) -> tuple[int, ...] | None:
    if importlib.util.find_spec(package) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return tuple(int(p) for p in version(package).split(".")[:2] if p.isdigit())
    except PackageNotFoundError:
        return None


def problem(kind: BaseQuantization, device: torch.device) -> UserError | None:
    """Why `kind` cannot run on `device` with the installed packages (None: it can)."""
    other = "or set Base model quantization to none."
    if kind == BaseQuantization.none:
        return None
    if kind == BaseQuantization.nf4:
        if device.type != "cuda" or torch.version.hip is not None:
            return UserError("NF4 quantization needs an NVIDIA GPU (bitsandbytes' 4-bit kernels); "
                             f"this run trains on {device.type.upper()}.",
                             f"Use int8 (works on any device), {other}", FIELD)
        if _version("bitsandbytes") is None:
            return UserError("NF4 quantization needs the bitsandbytes package, which is not "
                             "installed.", f"Install it (pip install bitsandbytes), use int8, "
                             f"{other}", FIELD)
        return None
    if kind == BaseQuantization.fp8 and device.type != "cuda":
        return UserError(f"fp8 quantization needs an NVIDIA GPU; this run trains on "
                         f"{device.type.upper()}.", f"Use int8, {other}", FIELD)
    ao = _version("torchao")
    if ao is None or ao < TORCHAO_MIN:
        found = "not installed" if ao is None else "too old (" + ".".join(map(str, ao)) + ")"
        return UserError(f"{kind.value} quantization needs the torchao package (0.16 or newer), "
                         f"which is {found}.", f"Install it (pip install torchao), {other}",
                         FIELD)
    if kind == BaseQuantization.fp8:
        cap = torch.cuda.get_device_capability(device)
        if cap < FP8_CAPABILITY:
            return UserError(f"fp8 quantization needs an RTX 40 (Ada) or newer GPU (compute "
                             f"capability 8.9); {torch.cuda.get_device_name(device)} has "
                             f"{cap[0]}.{cap[1]}.", f"Use int8 or nf4, {other}", FIELD)
    return None


def require(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse before loading anything when the quantization cannot run here."""
    if error := problem(cfg.base_quantization, device):
        raise error


def runnable(device: torch.device) -> tuple[str, ...]:
    """The base quantizations this machine can train with (for "Fit to my GPU")."""
    return tuple(k.value for k in BaseQuantization if problem(k, device) is None)


def _frozen_linear(module: torch.nn.Module, name: str = "") -> bool:
    return type(module) is torch.nn.Linear and "lora_" not in name


def quantize_unet(unet: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> int:
    """Quantize the frozen UNet's Linear weights in place (the UNet already on `device` in its
    compute precision, no LoRA yet); returns how many layers changed."""
    kind = cfg.base_quantization
    if kind == BaseQuantization.none:
        return 0
    require(cfg, device)
    if kind == BaseQuantization.nf4:
        n = _to_nf4(unet, device)
    else:
        from torchao.quantization import (Float8WeightOnlyConfig, Int8WeightOnlyConfig,
                                          quantize_)

        n = sum(1 for name, m in unet.named_modules() if _frozen_linear(m, name))
        config = Int8WeightOnlyConfig() if kind == BaseQuantization.int8 else \
            Float8WeightOnlyConfig()
        quantize_(unet, config, filter_fn=_frozen_linear)
    # peft warns that merge() needs transformers' TorchAoConfig; LoRA Studio never merges into a
    # quantized base (export reads the LoRA weights alone), so the warning would only alarm.
    warnings.filterwarnings("ignore", message=".*instantiated without `get_apply_tensor_subclass`")
    log.info("base UNet: %d Linear layers quantized to %s", n, kind.value)
    return n


def _to_nf4(unet: torch.nn.Module, device: torch.device) -> int:
    """Swap each frozen nn.Linear for a bitsandbytes Linear4bit (NF4, computing in the layer's
    dtype); Params4bit quantizes when moved to the GPU, as transformers' bnb integration does."""
    import bitsandbytes as bnb

    swaps = [(name, m) for name, m in unet.named_modules() if _frozen_linear(m, name)]
    for name, linear in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features,
                              bias=linear.bias is not None, compute_dtype=linear.weight.dtype,
                              quant_type="nf4", device="meta")
        q.weight = bnb.nn.Params4bit(linear.weight.data.cpu(), requires_grad=False,
                                     quant_type="nf4")
        if linear.bias is not None:
            q.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        setattr(parent, child, q.to(device))
    # peft's dispatch_bnb_4bit wraps Linear4bit only on a model that says it is 4-bit
    # (peft/tuners/lora/model.py reads `is_loaded_in_4bit`).
    unet.is_loaded_in_4bit = True
    return len(swaps)
