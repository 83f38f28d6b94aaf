"""The layers a LoRA can wrap in a base model, with their shapes, read from safetensors headers or
derived from diffusers configs (no torch): what studio/estimate.py sizes a LoRA from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from studio import safetensors_header
from studio.base_model.configs import read_json

SD1_TOTAL_UNET = 859_520_964  # parameters of the SD1.5 UNet (diffusers), for file-less estimates


@dataclass(frozen=True)
class Layer:
    """A weight a LoRA can wrap: a Linear (kernel 1) or a Conv2d, by its module name."""
    name: str
    n_in: int
    n_out: int
    kernel: int = 1  # kh * kw; LoRA's down matrix on a conv is r x (in * kh * kw)


def header_layers(files: list[Path], prefix: str = "") -> tuple[list[Layer], int]:
    """(weights of 2-D/4-D shape under `prefix`, total parameters under it) from the headers.

    Single files use their original (LDM) module names; the inner transformer names (to_q,
    ff.net.2, …) are the same as diffusers', so PEFT-style target matching counts the same layers.
    """
    layers, total = [], 0
    for file in files:
        header, _ = safetensors_header.read_header(file)
        for key, info in header.items():
            if not key.startswith(prefix):
                continue
            shape = info.get("shape") or []
            total += math.prod(shape)
            if key.endswith(".weight") and len(shape) in (2, 4):
                kernel = shape[2] * shape[3] if len(shape) == 4 else 1
                layers.append(Layer(key[len(prefix):-len(".weight")], shape[1], shape[0], kernel))
    return layers, total


def weight_files(unet_dir: Path) -> list[Path]:
    """The UNet's .safetensors weights in a diffusers folder (one file or all shards), or []."""
    for stem in ("diffusion_pytorch_model", "diffusion_pytorch_model.fp16"):
        single = unet_dir / f"{stem}.safetensors"
        if single.is_file():
            return [single]
        index = read_json(unet_dir / f"{stem}.safetensors.index.json")
        shards = sorted(set((index.get("weight_map") or {}).values()))
        if shards and all((unet_dir / s).is_file() for s in shards):
            return [unet_dir / s for s in shards]
    return []


def _per_block(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def config_layers(unet: dict) -> list[Layer]:
    """The transformer-block Linears of a diffusers UNet2DConditionModel, from its config alone.

    Mirrors diffusers' block layout: each Cross-Attn down block has `layers_per_block` attentions,
    each up block one more, the mid block one; every attention holds
    `transformer_layers_per_block` blocks of channel width C = that level's block_out_channels.
    """
    channels = list(unet.get("block_out_channels") or ())
    if not channels:
        return []
    n = len(channels)
    per_level = _per_block(unet.get("layers_per_block", 2), n)
    depth = _per_block(unet.get("transformer_layers_per_block", 1), n)
    up_depth = unet.get("reverse_transformer_layers_per_block") or depth[::-1]
    cross = unet.get("cross_attention_dim") or 768
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    places = []
    for i, kind in enumerate(unet.get("down_block_types") or ()):
        if "CrossAttn" in kind:
            places += [(f"down_blocks.{i}.attentions.{j}", channels[i], depth[i])
                       for j in range(per_level[i])]
    if "CrossAttn" in (unet.get("mid_block_type") or "UNetMidBlock2DCrossAttn"):
        places.append(("mid_block.attentions.0", channels[-1], depth[-1]))
    up_channels, up_per_level = channels[::-1], per_level[::-1]
    for i, kind in enumerate(unet.get("up_block_types") or ()):
        if "CrossAttn" in kind:
            places += [(f"up_blocks.{i}.attentions.{j}", up_channels[i], _per_block(up_depth, n)[i])
                       for j in range(up_per_level[i] + 1)]
    layers = []
    for prefix, c, blocks in places:
        # proj_in/out are 1x1 convs in SD1.x and Linears in SD2/SDXL: the same LoRA size.
        layers += [Layer(f"{prefix}.proj_in", c, c), Layer(f"{prefix}.proj_out", c, c)]
        for b in range(blocks):
            p = f"{prefix}.transformer_blocks.{b}"
            for attn, kv_in in (("attn1", c), ("attn2", cross)):
                layers += [Layer(f"{p}.{attn}.to_q", c, c), Layer(f"{p}.{attn}.to_k", kv_in, c),
                           Layer(f"{p}.{attn}.to_v", kv_in, c),
                           Layer(f"{p}.{attn}.to_out.0", c, c)]
            # GEGLU feed-forward: C -> 2 * 4C (gate and value), then 4C -> C.
            layers += [Layer(f"{p}.ff.net.0.proj", c, 8 * c), Layer(f"{p}.ff.net.2", 4 * c, c)]
    return layers


def text_encoder_layers(config: dict) -> list[Layer]:
    """The Linears of a CLIP text encoder that kohya-style text-encoder LoRAs wrap: q/k/v/out
    projections and both MLP layers of every transformer layer."""
    h, inner = config.get("hidden_size"), config.get("intermediate_size")
    if not (h and inner):
        return []
    layers = []
    for n in range(config.get("num_hidden_layers", 0)):
        p = f"text_model.encoder.layers.{n}"
        layers += [Layer(f"{p}.self_attn.{x}_proj", h, h) for x in ("q", "k", "v", "out")]
        layers += [Layer(f"{p}.mlp.fc1", h, inner), Layer(f"{p}.mlp.fc2", inner, h)]
    return layers


def folder_text_layers(folder: Path) -> list[Layer]:
    """Every text encoder's LoRA layers (SDXL has two; the worker trains both)."""
    return [layer for sub in ("text_encoder", "text_encoder_2")
            for layer in text_encoder_layers(read_json(folder / sub / "config.json"))]
