"""CUDA-only speed options for the UNet: regional torch.compile and channels-last (no-ops on CPU).

Regional compilation compiles each repeated transformer block once instead of the whole UNet, so
compile time stays a few seconds and the LoRA layers inside are traced with it (PyTorch recipe
"Reducing torch.compile cold start compilation time with regional compilation"; diffusers' docs,
"Accelerate inference", regional compilation). Channels-last is the layout cuDNN's tensor-core
convolutions prefer (PyTorch tutorial "Channels Last Memory Format"). Neither is measured on a GPU
yet (docs/benchmarks.md); on the CPU both are skipped with a log line, since compile's first
steps cost more than a short CPU run gains.
"""

from __future__ import annotations

import logging

import torch

from studio.config import TrainConfig

log = logging.getLogger("training")


def transformer_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's repeated transformer blocks (diffusers' BasicTransformerBlock)."""
    from diffusers.models.attention import BasicTransformerBlock

    return [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]


def apply(unet: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> list[str]:
    """Apply the options `cfg` asks for (after the LoRA is added, so compiled blocks include it);
    returns what was applied."""
    asked = [name for name in ("compile_unet", "channels_last") if getattr(cfg, name)]
    if not asked:
        return []
    if device.type != "cuda":
        log.info("%s: CUDA only, skipped on %s", " and ".join(asked), device.type)
        return []
    if cfg.channels_last:
        unet.to(memory_format=torch.channels_last)
    if cfg.compile_unet:
        blocks = transformer_blocks(unet)
        for block in blocks:
            block.compile()  # nn.Module.compile: in place, the module keeps its name and weights
        log.info("compiled %d transformer blocks", len(blocks))
    return asked
