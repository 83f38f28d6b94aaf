"""Merge ("bake in") LoRAs at chosen strengths into a full SD1.x/SD2.x/SDXL model: one .safetensors
file (SD1.x, SDXL) or a diffusers folder (all three)."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from pathlib import Path

import safetensors.torch
import torch

from studio import atomic
from studio.safetensors_header import data_section_sha256
from training import ldm_convert
from training.generate import Generator

FORMATS = ("safetensors", "diffusers")
SAVE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
# Same length as the real value, so patching it into the written header moves no tensor data.
HASH_PLACEHOLDER = "0x" + "0" * 64


def merge(generator: Generator, adapters: list[tuple[Path, float]], out: Path,
          fmt: str = "safetensors", precision: str = "fp16", title: str | None = None) -> Path:
    """Write base + sum(strength · LoRA) as `out` (a .safetensors file or a diffusers folder).

    The LoRA deltas are added to copies of the weights, so the Generator's pipeline is never
    modified; its previously active adapters are restored afterwards.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown merge format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if precision not in SAVE_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(SAVE_DTYPES)}")
    out = Path(out).expanduser().resolve()
    adapters = [(Path(p).resolve(), float(w)) for p, w in adapters]
    _refuse_to_clobber(generator, adapters, out, fmt)
    pipe = generator.pipe
    previous = [(a.path, w) for a, w in generator.active]
    try:
        generator.set_adapters(adapters)
        # Only the named files: a LoRA being trained inside the pipeline (a Generator's
        # `live_adapter`) stays out of the merged model.
        names = {generator.adapters[path].name for path, _ in adapters}
        dtype = SAVE_DTYPES[precision]
        parts = {name: fused_state_dict(getattr(pipe, name), dtype, names)
                 for name in ("unet", "vae", "text_encoder", "text_encoder_2")
                 if getattr(pipe, name, None) is not None}
        if fmt == "safetensors":
            ldm_convert.check_exportable(pipe.unet.config, pipe.text_encoder.config)
            _save_single_file(out, _single_file_tensors(pipe, parts),
                              _metadata(generator, adapters, out, title, dtype))
        else:
            _save_folder(out, pipe, parts)
    finally:
        generator.set_adapters(previous)
    return out


def _is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def _single_file_tensors(pipe, parts: dict) -> dict[str, torch.Tensor]:
    """LDM (SD1.x) or SGM (SDXL) tensors, with SDXL's `v_pred`/`ztsnr` marker keys when the
    model predicts velocity / uses a zero-terminal-SNR schedule, so ComfyUI, Forge and our own
    detector (studio/base_model/detect.py) read the merged file the way the base model was."""
    if not _is_sdxl(pipe):
        return ldm_convert.to_ldm(parts["unet"], pipe.unet.config, parts["vae"], pipe.vae.config,
                                  parts["text_encoder"])
    tensors = ldm_convert.to_sgm(parts["unet"], pipe.unet.config, parts["vae"], pipe.vae.config,
                                 parts["text_encoder"], parts["text_encoder_2"])
    if pipe.scheduler.config.get("prediction_type") == "v_prediction":
        tensors["v_pred"] = torch.tensor([])
    if pipe.scheduler.config.get("rescale_betas_zero_snr"):
        tensors["ztsnr"] = torch.tensor([])
    return tensors


def fused_state_dict(model: torch.nn.Module, dtype: torch.dtype, adapters: set[str]
                     ) -> dict[str, torch.Tensor]:
    """The model's plain (un-PEFT-ed) state dict on the CPU with the named LoRAs added in.

    W' = W + Σ scaling·B@A with PEFT's own `get_delta_weight`; `scaling` already holds strength ×
    alpha/r (peft `LoraLayer.set_scale`, set by diffusers' `set_adapters`), i.e. exactly what the
    forward pass adds, so the merged model computes what base + LoRA computed.
    """
    from peft.tuners.lora import LoraLayer

    merged: dict[str, torch.Tensor] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        if layer.merged:  # fuse_lora() already put the deltas into the base weight
            raise RuntimeError(f"{name}: adapters are fused into the weights; unfuse first")
        weight = layer.get_base_layer().weight.detach().float()
        for adapter in ([] if layer.disable_adapters else layer.active_adapters):
            if adapter not in adapters or adapter not in layer.lora_A or \
                    layer.scaling[adapter] == 0:
                continue
            if layer.use_dora.get(adapter) or layer.lora_bias.get(adapter):
                raise ValueError(f"{name}: DoRA/LoRA-bias adapters can't be merged here")
            weight = weight + layer.get_delta_weight(adapter).float()
        merged[f"{name}.weight"] = weight
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if any(part.startswith("lora_") for part in key.split(".")):
            continue  # lora_A / lora_B / lora_magnitude_vector of the PEFT wrapper
        key = key.replace(".base_layer.", ".")
        value = merged.get(key, value).detach()
        # Integer buffers (position ids) keep their type; floats take the chosen precision.
        out[key] = value.to("cpu", dtype if value.is_floating_point() else value.dtype)
    return out


def _refuse_to_clobber(generator: Generator, adapters: list[tuple[Path, float]], out: Path,
                       fmt: str) -> None:
    base = Path(generator.base_folder or generator.pipe.name_or_path or "").expanduser()
    if base.exists():
        base = base.resolve()
        if out == base or base in out.parents or out in base.parents:
            raise ValueError(f"{out} would overwrite the base model's own files in {base}; "
                             f"choose a path outside the model folder")
    if any(out == path for path, _ in adapters):
        raise ValueError(f"{out} is one of the LoRA files being merged")
    if fmt == "safetensors" and out.suffix.lower() != ".safetensors":
        raise ValueError(f"{out.name}: a single-file checkpoint must end in .safetensors")
    if out.is_dir() and (fmt == "safetensors" or not (out / "model_index.json").is_file()):
        # Replacing a folder is fine only when it is an earlier merged (diffusers) model.
        raise ValueError(f"{out} is an existing folder that is not a diffusers model")


def _metadata(generator: Generator, adapters: list[tuple[Path, float]], out: Path,
              title: str | None, dtype: torch.dtype) -> dict[str, str]:
    """Stability `modelspec.*` 1.0.1 (lora-formats.md §7.3): SwarmUI and Forge show these."""
    pipe = generator.pipe
    lines = [f"Base model: {generator.model_name}.", "", "Merged LoRAs:"]
    lines += [f"- {path.stem} at strength {w:g}" for path, w in adapters] or ["- none"]
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    size = pipe.unet.config.sample_size * scale
    prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
    precision = "fp16" if dtype == torch.float16 else "fp32"
    return {
        "format": "pt",
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": "stable-diffusion-xl-v1-base" if _is_sdxl(pipe)
        else "stable-diffusion-v1",
        "modelspec.implementation": "diffusers",
        "modelspec.title": title or out.stem,
        "modelspec.description": "\n".join(lines),
        "modelspec.date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "modelspec.resolution": f"{size}x{size}",
        "modelspec.prediction_type": "v" if prediction == "v_prediction" else "epsilon",
        "modelspec.merged_from": ", ".join([generator.model_name] +
                                           [f"{p.stem}:{w:g}" for p, w in adapters]),
        "modelspec.unet_dtype": precision,
        "modelspec.vae_dtype": precision,
        "modelspec.hash_sha256": HASH_PLACEHOLDER,
    }


def _save_single_file(out: Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str]) -> None:
    with atomic.atomic_path(out) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
        # modelspec.hash_sha256 = SHA-256 of the tensor data (SwarmUI): hash what was written,
        # then patch the same-length placeholder in the header, which moves no data bytes.
        digest = "0x" + data_section_sha256(tmp)
        with open(tmp, "r+b") as fh:
            length = int.from_bytes(fh.read(8), "little")
            header = fh.read(length)
            if header.count(HASH_PLACEHOLDER.encode()) != 1:
                raise RuntimeError("hash placeholder not found exactly once in the header")
            fh.seek(8)
            fh.write(header.replace(HASH_PLACEHOLDER.encode(), digest.encode()))


def _rebuilt(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A plain copy of `model`'s class holding `state_dict` (no PEFT wrappers, no weight copy)."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on "meta": nothing random is computed
        fresh = (type(model).from_config(model.config) if hasattr(type(model), "from_config")
                 else type(model)(model.config))
    fresh.load_state_dict(state_dict, strict=True, assign=True)
    return fresh.eval()


def _save_folder(out: Path, pipe, parts: dict) -> None:
    """save_pretrained into a temporary sibling folder, then rename it into place."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = out.with_name(f".{out.name}.old")
    try:
        models = {name: _rebuilt(getattr(pipe, name), sd) for name, sd in parts.items()}
        if _is_sdxl(pipe):
            merged = StableDiffusionXLPipeline(**models, tokenizer=pipe.tokenizer,
                                               tokenizer_2=pipe.tokenizer_2,
                                               scheduler=pipe.scheduler)
        else:
            merged = StableDiffusionPipeline(
                **models, tokenizer=pipe.tokenizer, scheduler=pipe.scheduler, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)
        merged.save_pretrained(tmp, safe_serialization=True)
        for path in [tmp, *tmp.rglob("*")]:
            # mkdtemp makes 0700 and safetensors 0600 files (lora-formats.md §4): other
            # accounts and tools (a shared ComfyUI/A1111 models folder) must be able to read.
            os.chmod(path, 0o755 if path.is_dir() else atomic.FILE_MODE)
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        if out.exists():  # an earlier merge (checked by _refuse_to_clobber): swap, then delete
            shutil.rmtree(old, ignore_errors=True)  # left over from an interrupted swap
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):  # make the rename durable where directories can be synced
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
