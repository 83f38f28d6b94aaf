"""Write a trained PEFT LoRA as the kohya-style .safetensors every UI loads (plus diffusers format)."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import safetensors.torch
import torch

from studio import atomic
from studio.safetensors_header import data_section_sha256, legacy_hash
from training.metadata import TrainingFacts, a1111_sidecar, build_metadata

# lora-formats.md §5: diffusers takes the kohya path only if *every* key has one of these.
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
# Spellings of the other formats (§2) that must never leak into a kohya file.
FOREIGN_SPELLINGS = ("lora_A", "lora_B", ".lora.", "_lora.", "lora_linear_layer", ".processor")
SAVE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# Fixed-width stand-ins: the real values have the same length, so swapping them in keeps the
# header length, hence the data section and the byte at 1 MiB, where they are.
PLACEHOLDERS = {"sshs_model_hash": "0" * 64, "sshs_legacy_hash": "0" * 8,
                "modelspec.hash_sha256": "0x" + "0" * 64}
# Text-encoder prefixes per base_model_version (lora-formats.md §1, §3): SD1/SD2 have one encoder,
# `lora_te_` (InvokeAI ignores `lora_te1_` on SD1, §4 defect 3); SDXL `lora_te1_`/`lora_te2_`.
TE_PREFIXES = {"sd_v1": ("lora_te",), "sd_v2": ("lora_te",),
               "sdxl_base_v1-0": ("lora_te1", "lora_te2")}
# kohya's text-encoder targets: every Linear of CLIPAttention and CLIPMLP (§1), 6 per layer.
KOHYA_TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def kohya_state_dict(peft_state_dict: dict[str, torch.Tensor], alpha: float,
                     prefix: str = "lora_unet", dtype: torch.dtype = torch.float16,
                     rename: Callable[[str], str] | None = None) -> dict[str, torch.Tensor]:
    """PEFT `<module>.lora_A/B.weight` -> kohya `<prefix>_<module with . -> _>.lora_down/up` + `.alpha`.

    Own conversion (lora-formats.md §6) because diffusers' convert_state_dict_to_kohya writes
    `.alpha` = rank, which makes a LoRA trained with alpha != rank the wrong strength in
    A1111/ComfyUI/InvokeAI (§4 defect 1). `.alpha` here is the configured alpha. `rename` maps
    the module path first (SDXL: diffusers -> SGM blocks; text encoders: restore `text_model.`).
    """
    pairs: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in peft_state_dict.items():
        for peft_part, kohya_part in ((".lora_A.weight", "down"), (".lora_B.weight", "up")):
            if key.endswith(peft_part):
                pairs[key[: -len(peft_part)]][kohya_part] = value
                break
        else:
            # DoRA magnitudes, LoRA biases, embeddings: no kohya spelling that UIs agree on.
            raise ValueError(f"cannot export {key!r}: only plain LoRA weights (lora_A/lora_B) "
                             f"have a kohya equivalent")
    out: dict[str, torch.Tensor] = {}
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"down", "up"}:
            raise ValueError(f"{module}: has only {sorted(ab)} of lora_A/lora_B")
        name = f"{prefix}_{(rename(module) if rename else module).replace('.', '_')}"
        out[f"{name}.lora_down.weight"] = ab["down"].detach().to("cpu", dtype).contiguous()
        out[f"{name}.lora_up.weight"] = ab["up"].detach().to("cpu", dtype).contiguous()
        # A 0-dim tensor in the save dtype, as kohya's `alpha` buffer (§1).
        out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return out


def sgm_unet_names(unet_config: Mapping) -> Callable[[str], str]:
    """diffusers UNet module path -> SGM/LDM path, the names kohya, A1111 and most Civitai SDXL
    LoRAs use (`down_blocks.1.attentions.0` -> `input_blocks.4.1`, §1), built from the config.

    Reuses training.ldm_convert's block map (its SD1 guard refuses SDXL's extra embedding, which
    is mapped here: `add_embedding.linear_1/2` -> `label_emb.0.0/2`). Unknown paths raise.
    """
    from training.ldm_convert import unet_module_map

    plain = {**unet_config, "addition_embed_type": None}
    modules = unet_module_map(plain)
    modules.update({"add_embedding.linear_1": ("label_emb.0.0", {}),
                    "add_embedding.linear_2": ("label_emb.0.2", {})})

    def rename(module: str) -> str:
        parts = module.split(".")
        for cut in range(len(parts), 0, -1):
            found = modules.get(".".join(parts[:cut]))
            if found is not None:
                target, inner = found
                rest = ".".join(parts[cut:])
                for old, new in inner.items():
                    if rest == old or rest.startswith(old + "."):
                        rest = new + rest[len(old):]
                        break
                return f"{target}.{rest}" if rest else target
        raise ValueError(f"no SGM name for UNet module {module!r}")

    return rename


def text_model_path(module: str) -> str:
    """transformers >= 5.6 dropped `text_model.` from CLIPTextModel paths (§2); kohya names keep
    it (`lora_te_text_model_encoder_layers_0_…`), so it is put back. PeftModel wrappers' own
    `base_model.model.` prefix is dropped first."""
    module = module.removeprefix("base_model.model.")
    return module if module.startswith("text_model.") else "text_model." + module


def validate_kohya(tensors: dict[str, torch.Tensor], expected_modules: int | None = None) -> None:
    """Refuse a file some UI would silently half-load (lora-formats.md §6 step 5)."""
    modules: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in tensors.items():
        if not key.startswith(KOHYA_PREFIXES):
            raise ValueError(f"{key!r} lacks a kohya prefix {KOHYA_PREFIXES}: diffusers would "
                             f"not treat the file as kohya, A1111/ComfyUI would skip it")
        suffix = next((s for s in SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            raise ValueError(f"{key!r} does not end with one of {SUFFIXES}")
        module = key[: -len(suffix)]
        if any(s in module for s in FOREIGN_SPELLINGS) or "." in module:
            raise ValueError(f"{key!r} still has a diffusers/PEFT spelling in its module name")
        modules[module][suffix] = value
    for module, parts in modules.items():
        missing = [s for s in SUFFIXES if s not in parts]
        if missing:
            raise ValueError(f"{module} is missing {missing}")
        down, up, alpha = (parts[s] for s in SUFFIXES)
        if alpha.dim() != 0 or down.shape[0] != up.shape[1]:
            raise ValueError(f"{module}: shapes down {tuple(down.shape)}, up {tuple(up.shape)}, "
                             f"alpha {tuple(alpha.shape)} don't form a LoRA")
    if expected_modules is not None and len(modules) != expected_modules:
        raise ValueError(f"{len(modules)} LoRA modules converted, but the model has "
                         f"{expected_modules}")


def _serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    return safetensors.torch.save(tensors, metadata=metadata)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def save_lora(path: Path, tensors: dict[str, torch.Tensor],
              metadata: dict[str, str]) -> dict[str, str]:
    """Write atomically (temp file + fsync + rename, mode 0644) with hashes of the written bytes.

    `sshs_model_hash` (A1111/Forge show it; Civitai's AutoV3 is its first 12 hex) and
    `modelspec.hash_sha256` are the SHA-256 of the data section, `sshs_legacy_hash` the AutoV1
    hash (lora-formats.md §7.2). kohya hashes a differently-headed copy; we hash the final bytes.
    Returns the metadata as written.
    """
    path = Path(path)
    final = {**metadata, "format": "pt", **PLACEHOLDERS}
    draft = _serialize(tensors, final)
    model_hash = data_section_sha256(io.BytesIO(draft))
    final.update(sshs_model_hash=model_hash, sshs_legacy_hash=legacy_hash(io.BytesIO(draft)))
    final["modelspec.hash_sha256"] = "0x" + model_hash
    data = _serialize(tensors, final)
    if len(data) != len(draft):  # would mean the placeholders didn't keep the header length
        raise RuntimeError("safetensors header length changed while adding the hashes")
    # (If a header ever exceeded 1 MiB, e.g. a huge thumbnail, the legacy hash would cover
    # header bytes and could not describe itself; real LoRA headers are a few KB.)
    with atomic.atomic_path(path) as tmp:
        _write_bytes(tmp, data)
        if data_section_sha256(tmp) != model_hash:  # read back what actually reached the disk
            raise OSError(f"{path}: written data does not match its hash")
    return final


def _jsonable(config: dict) -> dict:
    # diffusers json.dumps the LoraConfig dict; sets (target_modules) become sorted lists so
    # the file is the same for the same training.
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in config.items()}


def save_diffusers(folder: Path, unet, lora_config, dtype: torch.dtype | None = None,
                   text_encoders: Sequence = (), sdxl: bool = False) -> Path:
    """`<folder>/pytorch_lora_weights.safetensors` in diffusers/PEFT spelling, atomically, 0644.

    Without `unet_lora_adapter_metadata` diffusers reloads with alpha = rank (lora-formats.md
    §4 defect 5); with it (diffusers >= 0.34) the LoraConfig, and so alpha, survives.
    """
    import diffusers
    from peft import get_peft_model_state_dict

    def layers(model) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", dtype or v.dtype).contiguous()
                for k, v in get_peft_model_state_dict(model).items()}

    kwargs = dict(unet_lora_layers=layers(unet),
                  unet_lora_adapter_metadata=_jsonable(lora_config.to_dict()))
    for name, te in zip(("text_encoder", "text_encoder_2"), text_encoders):
        kwargs[f"{name}_lora_layers"] = layers(te)
        kwargs[f"{name}_lora_adapter_metadata"] = _jsonable(te.peft_config["default"].to_dict())
    pipeline = diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    target = Path(folder) / DIFFUSERS_WEIGHT_NAME
    with atomic.atomic_path(target) as tmp:
        # weight_name = the temp file's name: diffusers writes exactly there, we rename.
        pipeline.save_lora_weights(tmp.parent, weight_name=tmp.name, safe_serialization=True,
                                   **kwargs)
    return target


def _check_config(lora_config, cfg) -> None:
    """Refuse adapters whose scaling a single kohya alpha per module can't express."""
    if float(lora_config.lora_alpha) != float(cfg.alpha) or lora_config.r != cfg.rank:
        raise ValueError(f"adapter has r={lora_config.r}, alpha={lora_config.lora_alpha} but the "
                         f"config says rank={cfg.rank}, alpha={cfg.alpha}")
    if lora_config.rank_pattern or lora_config.alpha_pattern:
        raise ValueError("per-module rank/alpha patterns are not supported by the exporter")
    if lora_config.use_rslora or lora_config.use_dora:
        raise ValueError("rsLoRA/DoRA scaling has no kohya LoRA equivalent")


def _count_lora_modules(unet, adapter: str = "default") -> int:
    from peft.tuners.lora import LoraLayer

    return sum(1 for m in unet.modules() if isinstance(m, LoraLayer) and adapter in m.lora_A)


def kohya_tensors(unet, cfg, version: str, text_encoders: Sequence = ()
                  ) -> dict[str, torch.Tensor]:
    """Every kohya tensor of a trained UNet (+ text encoders, in pipeline order), validated.

    SD1/SD2 UNet names stay diffusers paths (what sd-scripts' SD1 UNet uses); SDXL UNet names
    are SGM paths (§1, §3: what kohya and A1111/ComfyUI expect and diffusers remaps on load).
    """
    from peft import get_peft_model_state_dict

    prefixes = TE_PREFIXES.get(version, ("lora_te",))
    if len(text_encoders) > len(prefixes):
        raise ValueError(f"{version} has {len(prefixes)} text encoder(s), got "
                         f"{len(text_encoders)}")
    dtype = SAVE_DTYPES[str(cfg.save_dtype)]
    _check_config(unet.peft_config["default"], cfg)
    rename = sgm_unet_names(unet.config) if version.startswith("sdxl") else None
    tensors = kohya_state_dict(get_peft_model_state_dict(unet), cfg.alpha, dtype=dtype,
                               rename=rename)
    expected = _count_lora_modules(unet)
    for te, prefix in zip(text_encoders, prefixes):
        _check_config(te.peft_config["default"], cfg)
        tensors.update(kohya_state_dict(get_peft_model_state_dict(te), cfg.alpha, prefix=prefix,
                                        dtype=dtype, rename=text_model_path))
        expected += _count_lora_modules(te)
    validate_kohya(tensors, expected_modules=expected)
    return tensors


def export_adapter(unet, cfg, facts: TrainingFacts, path: Path,
                   text_encoders: Sequence = ()) -> list[Path]:
    """The engine's one call: kohya .safetensors + A1111 .json sidecar (+ diffusers folder).

    `text_encoders`: the LoRA-wrapped text encoders in pipeline order (SDXL: both, or none).
    """
    path = Path(path)
    lora_config = unet.peft_config["default"]
    version = facts.base_model_version
    tensors = kohya_tensors(unet, cfg, version, text_encoders)
    metadata = build_metadata(cfg, facts)
    if text_encoders:  # kohya's keys for a run that also trained the text encoder(s)
        metadata.update(ss_network_train_unet_only="False",
                        ss_text_encoder_lr=str(cfg.text_encoder_lr))
    save_lora(path, tensors, metadata)
    sidecar = path.with_suffix(".json")
    atomic.write_text(sidecar, json.dumps(a1111_sidecar(cfg, facts), indent=2,
                                          ensure_ascii=False) + "\n")
    written = [path, sidecar]
    if cfg.export_diffusers:
        written.append(save_diffusers(path.parent / f"{path.stem}-diffusers", unet, lora_config,
                                      dtype=SAVE_DTYPES[str(cfg.save_dtype)],
                                      text_encoders=text_encoders,
                                      sdxl=version.startswith("sdxl")))
    return written
