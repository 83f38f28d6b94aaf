"""What a base-model setting points at, read from JSON configs and safetensors headers (no torch).

The GUI shows the detected architecture next to the model picker and feeds the UNet's layer
shapes to studio/estimate.py, all without loading a single weight.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from studio import safetensors_header

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")  # the worker refuses these (training/models.py)
SD1_TOTAL_UNET = 859_520_964  # parameters of the SD1.5 UNet (diffusers), for file-less estimates
UNET_PREFIX = "model.diffusion_model."  # original (single-file) checkpoints' UNet key prefix


@dataclass(frozen=True)
class Layer:
    """A weight a LoRA can wrap: a Linear (kernel 1) or a Conv2d, by its module name."""
    name: str
    n_in: int
    n_out: int
    kernel: int = 1  # kh * kw; LoRA's down matrix on a conv is r x (in * kh * kw)


@dataclass(frozen=True)
class ModelInfo:
    path: Path | None
    architecture: str  # "SD 1.x", "SDXL", … or "" when unknown
    problem: str = ""  # why training would refuse it ("" = looks usable)
    unet_config: dict = field(default_factory=dict)
    layers: tuple[Layer, ...] = ()  # empty when neither weights nor a config could be read
    unet_params: int = 0  # 0 = unknown
    exact: bool = False  # layers/params from the weights file (exact) or the config (derived)
    text_layers: tuple[Layer, ...] = ()  # the text encoder's Linears, from its config

    @property
    def ok(self) -> bool:
        return not self.problem


def hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache folder of `org/name`, if it was downloaded before."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
    repo = Path(hub) / ("models--" + repo_id.replace("/", "--"))
    try:
        ref = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snapshot = repo / "snapshots" / ref
    return snapshot if snapshot.is_dir() else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _architecture(pipeline: str, unet: dict) -> str:
    cross = unet.get("cross_attention_dim")
    if "XL" in pipeline or cross == 2048 or unet.get("addition_embed_type") == "text_time":
        return "SDXL"
    if cross == 1024:
        return "SD 2.x"
    if cross == 768:
        return "SD 1.x"
    return "SD 1.x-style (small or custom)" if unet else ""


def _header_layers(files: list[Path], prefix: str = "") -> tuple[list[Layer], int]:
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


def _weight_files(unet_dir: Path) -> list[Path]:
    for stem in ("diffusion_pytorch_model", "diffusion_pytorch_model.fp16"):
        single = unet_dir / f"{stem}.safetensors"
        if single.is_file():
            return [single]
        index = _read_json(unet_dir / f"{stem}.safetensors.index.json")
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


def inspect(value: str, project_root: Path | None = None) -> ModelInfo:
    """Describe the base model a `base_model` setting names (path or Hub id); never raises."""
    value = value.strip()
    if not value:
        return ModelInfo(None, "", "No base model chosen.")
    path = Path(value).expanduser()
    if not path.is_absolute() and project_root is not None and (project_root / path).exists():
        path = project_root / path
    if not path.exists() and value.count("/") == 1 and not value.startswith(("/", ".")):
        snapshot = hub_snapshot(value)
        if snapshot is None:
            return ModelInfo(None, "", f"{value!r} is neither a folder on disk nor a model in "
                                       f"the local Hugging Face cache, and training never "
                                       f"downloads. Choose a model folder (Folder…), or "
                                       f"download it once: huggingface-cli download {value}")
        path = snapshot
    if path.is_file():
        return _inspect_file(path)
    if not path.is_dir():
        return ModelInfo(path, "", f"Not found: {path}")
    return _inspect_folder(path)


def _inspect_folder(path: Path) -> ModelInfo:
    index = _read_json(path / "model_index.json")
    unet = _read_json(path / "unet" / "config.json")
    if not index and not unet:
        return ModelInfo(path, "", "Not a diffusers model folder (no model_index.json): choose "
                                   "the folder that contains unet/, vae/ and text_encoder/.")
    arch = _architecture(str(index.get("_class_name", "")), unet)
    problem = ""
    if arch == "SDXL":
        problem = ("SDXL models are not supported by the training engine yet: choose an SD 1.x "
                   "model.")
    text = _read_json(path / "text_encoder" / "config.json")
    if not problem and text and unet and text.get("hidden_size") != unet.get("cross_attention_dim"):
        problem = "This model's UNet and text encoder do not match: choose an SD 1.x model."
    files = _weight_files(path / "unet")
    try:
        layers, total = _header_layers(files) if files else ([], 0)
    except (OSError, ValueError):
        layers, total = [], 0
    exact = bool(layers)
    if not layers:
        layers = config_layers(unet)
        total = SD1_TOTAL_UNET if arch == "SD 1.x" else 0
    return ModelInfo(path, arch, problem, unet, tuple(layers), total, exact,
                     tuple(text_encoder_layers(text)))


def _inspect_file(path: Path) -> ModelInfo:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return ModelInfo(path, "", "Pickle checkpoints can run arbitrary code when loaded and are "
                                   "never opened: use a .safetensors file or a diffusers folder.")
    if path.suffix.lower() != ".safetensors":
        return ModelInfo(path, "", "Not a model file: choose a .safetensors checkpoint or a "
                                   "diffusers model folder.")
    try:
        layers, total = _header_layers([path], UNET_PREFIX)
        header, _ = safetensors_header.read_header(path)
    except (OSError, ValueError) as exc:
        return ModelInfo(path, "", f"Cannot read this file: {exc}")
    arch = "SDXL" if any(k.startswith("conditioner.embedders.1") for k in header) else \
        "SD 2.x" if any(k.startswith("cond_stage_model.model.") for k in header) else \
        "SD 1.x" if total else ""
    return ModelInfo(path, arch, "Single-file checkpoints are not supported by the training "
                                 "engine yet: use the model's diffusers folder.",
                     {}, tuple(layers), total, bool(layers))
