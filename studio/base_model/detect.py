"""What a single-file Stable Diffusion checkpoint is, and whether it trains, from its header.

Architecture (SD1 / SD2 / SDXL base), prediction type, zero-terminal-SNR, bundled VAE, fp8, and
every layout training can't use (pickles, inpainting, refiner, EDM, UNet-only, LoRAs…), decided
from key names, shapes and dtypes: lora-formats.md §8.5, issue 6. The file is never unpickled and
its tensor data is never read, with one bounded exception: SD2 files carry no v-prediction marker,
so, as ComfyUI does, one 320-value LayerNorm bias (≤ 1.3 KB) is read to guess it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from studio.safetensors_header import read_header
from studio.errors import UserError

UNET = "model.diffusion_model."
VAE_KEY = "first_stage_model.encoder.conv_in.weight"
SD1_TE = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD1_TE_OLD = "cond_stage_model.transformer.embeddings.token_embedding.weight"
SD2_TE = "cond_stage_model.model.token_embedding.weight"
XL_TE1 = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
XL_TE2 = "conditioner.embedders.1.model.token_embedding.weight"
REFINER_TE = "conditioner.embedders.0.model.token_embedding.weight"
IN_CONV = UNET + "input_blocks.0.0.weight"
LABEL_EMB = UNET + "label_emb.0.0.weight"  # SDXL's pooled-text + size/crop embedding
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
FP8 = ("F8_E4M3", "F8_E5M2")
FLOATS = ("F16", "BF16", "F32", "F64", *FP8)
# ComfyUI `supported_models.SD20.model_type`: the population std of this bias exceeds 0.09 in
# SD2 768-v checkpoints and not in 512-base ones (lora-formats.md §8.5); a heuristic, not a rule.
SD2_V_STD_THRESHOLD = 0.09
MAX_PROBE_BYTES = 64 * 1024

CONVERT_HINT = ("Download the .safetensors version of the model (most model pages offer one), or "
                "convert the file with a tool you trust on a machine you trust.")


class BaseModelRefused(UserError):
    """A base model (folder, file or Hub id) training can't use, with what to do about it. The
    GUI shows this same text, so the Train button and the worker agree."""
    field = "base_model"


class CheckpointRefused(BaseModelRefused):
    """A single-file checkpoint training can't use, decided from its header."""


@dataclass
class Detected:
    architecture: str  # "sd1" | "sd2" | "sdxl"
    prediction_type: str | None  # "epsilon" | "v_prediction" | None = unknown: ask or default
    zero_terminal_snr: bool
    has_vae: bool
    notes: list[str] = field(default_factory=list)
    # Where prediction_type came from: "marker" (v_pred key), "metadata" (modelspec),
    # "weights" (SD2 heuristic: a guess), "default" (SD1/SDXL without marker), "unknown".
    prediction_source: str = "unknown"
    fp8: bool = False  # weights stored in 8-bit floats; the loader upcasts them
    text_hidden: tuple[int, ...] = ()  # width of each text encoder (SDXL: two)
    cross_attention_dim: int = 0


def _refuse(path: Path, message: str, hint: str) -> CheckpointRefused:
    return CheckpointRefused(f"{path.name}: {message}", hint)


def _sniff(path: Path) -> None:
    """Refuse pickles (by name or by content under a .safetensors name) and GGUF, unopened."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise _refuse(path, "a pickle checkpoint, which can run arbitrary code when loaded; "
                            "LoRA Studio never opens those.", CONVERT_HINT)
    with open(path, "rb") as fh:
        magic = fh.read(9)
    # A safetensors header (JSON) starts at byte 8 with "{"; the 8 length bytes before it can
    # look like anything, pickle opcodes included, so only a file without that "{" is sniffed.
    looks_pickled = magic.startswith(b"PK\x03\x04") or \
        (magic[:1] == b"\x80" and magic[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
    if magic[8:9] != b"{" and looks_pickled:
        raise _refuse(path, "a pickle (PyTorch) checkpoint under a .safetensors name; LoRA Studio "
                            "never opens those.", CONVERT_HINT)
    if magic.startswith(b"GGUF") or suffix == ".gguf":
        raise _refuse(path, "a GGUF (quantised) file; training needs full-precision weights.",
                      "Use the model's .safetensors checkpoint.")
    if suffix not in SAFETENSORS_SUFFIXES:
        raise _refuse(path, f"not a .safetensors checkpoint ({suffix or 'no extension'}).",
                      "Choose a .safetensors file or a diffusers model folder.")


def _shape(table: dict, key: str) -> list[int]:
    return list(table.get(key, {}).get("shape") or [])


def _cross_attention_dim(table: dict) -> int:
    dims = {_shape(table, k)[-1] for k in table
            if k.startswith(UNET) and k.endswith("attn2.to_k.weight") and _shape(table, k)}
    return dims.pop() if len(dims) == 1 else 0


def _not_a_checkpoint(path: Path, keys: list[str]) -> CheckpointRefused | None:
    """Files that are something else: a LoRA, a bare UNet, a VAE, a text encoder."""
    if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_down." in k or ".lora_A." in k
           for k in keys):
        return _refuse(path, "a LoRA, not a base model.",
                       "Choose the checkpoint the LoRA was trained on as the base model.")
    if any(k.startswith(UNET) for k in keys):
        return None
    if any(k.startswith("diffusion_model.") for k in keys) or \
            any(k.startswith(("down_blocks.", "conv_in.", "time_embedding.")) for k in keys):
        return _refuse(path, "only a UNet (a diffusion model without its text encoder and VAE).",
                       "Use the full checkpoint, or the model's diffusers folder.")
    if any(k.startswith(("encoder.down", "decoder.up", "first_stage_model.")) for k in keys):
        return _refuse(path, "a VAE, not a full checkpoint.", "Choose the model checkpoint.")
    return _refuse(path, "not a Stable Diffusion 1.x/2.x/XL checkpoint (unknown layout).",
                   "Use an SD1.5, SD2.x or SDXL base-model .safetensors, or a diffusers folder.")


def _architecture(path: Path, table: dict) -> tuple[str, tuple[int, ...]]:
    if REFINER_TE in table and XL_TE2 not in table:
        raise _refuse(path, "an SDXL refiner; LoRAs are trained on the SDXL base model.",
                      "Choose an SDXL base checkpoint (or a fine-tune of it).")
    if XL_TE1 in table and XL_TE2 in table:
        arch, hidden = "sdxl", (_shape(table, XL_TE1)[-1], _shape(table, XL_TE2)[-1])
    elif SD2_TE in table:
        arch, hidden = "sd2", (_shape(table, SD2_TE)[-1],)
    elif SD1_TE in table:
        arch, hidden = "sd1", (_shape(table, SD1_TE)[-1],)
    elif SD1_TE_OLD in table:
        # The text encoder saved without `text_model.` (pre-2022 transformers, and again
        # transformers >= 5.6, whose CLIPTextModel is flat): A1111 and ComfyUI load it, and
        # training/single_file.py maps the names (issue 13).
        arch, hidden = "sd1", (_shape(table, SD1_TE_OLD)[-1],)
    elif any(k.startswith("conditioner.embedders.") for k in table):
        raise _refuse(path, "an SDXL-family checkpoint with an unexpected set of text encoders.",
                      "Only SDXL base and its fine-tunes are supported.")
    else:
        raise _refuse(path, "a UNet without its text encoder (mis-packed or UNet-only file).",
                      "Use the complete checkpoint, or the model's diffusers folder.")
    if arch == "sdxl" and LABEL_EMB not in table:
        raise _refuse(path, "SDXL text encoders with a UNet that lacks SDXL's size embedding "
                            "(mis-packed).", "Use the complete SDXL checkpoint.")
    if arch != "sdxl" and LABEL_EMB in table:
        raise _refuse(path, "a UNet with a class/size embedding that SD1/SD2 don't have.",
                      "This model variant is not supported.")
    return arch, hidden


def _prediction(path: Path, table: dict, metadata: dict, arch: str
                ) -> tuple[str | None, str, list[str]]:
    if "v_pred" in table:
        return "v_prediction", "marker", ["The file marks itself as v-prediction ('v_pred' key, "
                                          "as ComfyUI and Forge read it)."]
    declared = (metadata.get("modelspec.prediction_type") or "").strip().lower()
    if declared in ("v", "v_prediction", "epsilon", "eps"):
        return ("v_prediction" if declared.startswith("v") else "epsilon"), "metadata", \
            [f"modelspec.prediction_type says {declared!r}."]
    if "768-v" in metadata.get("modelspec.architecture", ""):
        return "v_prediction", "metadata", ["modelspec.architecture says 768-v."]
    if arch != "sd2":
        return "epsilon", "default", []
    std = sd2_bias_std(path, table)
    if std is None:
        return None, "unknown", ["SD2 files don't say whether they predict noise (512 base) or "
                                 "velocity (768-v); choose the prediction type."]
    guess = "v_prediction" if std > SD2_V_STD_THRESHOLD else "epsilon"
    return guess, "weights", [f"SD2 prediction type guessed as {guess} from the weights "
                              f"(std {std:.3f}, ComfyUI's rule); if samples look wrong, set "
                              f"the prediction type."]


def _probe_key(table: dict) -> str | None:
    """output_blocks.11.1.transformer_blocks.0.norm1.bias in SD2; the last such block in general."""
    found = [(int(k.split(".")[3]), k) for k in table
             if k.startswith(UNET + "output_blocks.")
             and k.endswith(".1.transformer_blocks.0.norm1.bias")]
    return max(found)[1] if found else None


def sd2_bias_std(path: Path, table: dict) -> float | None:
    """Population std of the probe bias, reading only its bytes (None if absent or odd dtype)."""
    key = _probe_key(table)
    if key is None:
        return None
    info = table[key]
    start, end = info["data_offsets"]
    if info.get("dtype") not in ("F16", "BF16", "F32") or end - start > MAX_PROBE_BYTES:
        return None
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + length + start)
        raw = fh.read(end - start)
    if info["dtype"] == "F32":
        values = struct.unpack(f"<{len(raw) // 4}f", raw)
    elif info["dtype"] == "F16":
        values = struct.unpack(f"<{len(raw) // 2}e", raw)
    else:  # bfloat16 = the upper half of a float32
        halves = struct.unpack(f"<{len(raw) // 2}H", raw)
        values = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    if not values:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def detect(path: str | Path) -> Detected:
    """Describe a single-file checkpoint or raise CheckpointRefused saying why it can't be used."""
    path = Path(path)
    if not path.is_file():
        raise _refuse(path, "file not found.", "Check the Base model setting.")
    _sniff(path)
    try:
        table, metadata = read_header(path)
    except ValueError as exc:
        raise CheckpointRefused(f"{exc}", "The file is damaged or not a safetensors file; "
                                          "download it again.") from None
    keys = list(table)
    if "edm_mean" in table or "edm_std" in table:
        raise _refuse(path, "an EDM model (Playground v2.5 style), which uses a different noise "
                            "schedule.", "Choose an SD1.5, SD2.x or SDXL checkpoint.")
    if "edm_vpred.sigma_max" in table:
        raise _refuse(path, "an EDM v-prediction model (CosXL style), whose noise schedule "
                            "training does not support.", "Choose a standard SDXL checkpoint.")
    refused = _not_a_checkpoint(path, keys)
    if refused is not None:
        raise refused
    in_channels = (_shape(table, IN_CONV) or [0, 0])[1]
    if in_channels == 9:
        raise _refuse(path, "an inpainting model (9 input channels); style LoRAs are trained on "
                            "the regular model.", "Choose the non-inpainting version.")
    if in_channels != 4:
        raise _refuse(path, f"a UNet with {in_channels or 'no'} input channels (regular models "
                            f"have 4: instruct-pix2pix, upscalers and the like aren't supported).",
                      "Choose an SD1.5, SD2.x or SDXL base checkpoint.")
    arch, hidden = _architecture(path, table)
    cross = _cross_attention_dim(table)
    expected = sum(hidden) if arch == "sdxl" else hidden[0]
    if cross != expected:
        raise _refuse(path, f"its UNet cross-attends to width {cross} but its text encoder(s) "
                            f"give {expected} (pieces of different models packed together).",
                      "Use an unmodified checkpoint.")
    dtypes = {table[k].get("dtype") for k in keys if k.startswith(UNET)}
    if dtypes - set(FLOATS):
        raise _refuse(path, f"quantised weights ({', '.join(sorted(dtypes - set(FLOATS)))}); "
                            f"training needs floating-point weights.",
                      "Use the fp16/fp32 version of the model.")
    notes: list[str] = []
    fp8 = bool({table[k].get("dtype") for k in keys} & set(FP8))
    if fp8:
        # Decision (issue 6): accept and upcast rather than refuse. The precision is already
        # lost, but the file is otherwise a valid model; the LoRA then matches the fp8 copy best.
        notes.append("Weights are stored as 8-bit floats; they are upcast for training (more "
                     "memory than the file size suggests). The LoRA fits this fp8 copy best.")
    has_vae = VAE_KEY in table
    if not has_vae:
        notes.append("No VAE in this file: a separate VAE is needed to encode the images.")
    if sum(k.startswith("model_ema.") for k in keys) > 100:
        notes.append("The file also holds EMA weights; the regular (non-EMA) weights are used.")
    if SD1_TE_OLD in table and SD1_TE not in table:
        notes.append("The text encoder is stored without 'text_model.' in its names (an older "
                     "layout); it is read as A1111 and ComfyUI read it.")
    prediction, source, why = _prediction(path, table, metadata, arch)
    ztsnr = "ztsnr" in table
    if ztsnr:
        why.append("Zero-terminal-SNR schedule ('ztsnr' key).")
    return Detected(arch, prediction, ztsnr, has_vae, notes + why, source, fp8, hidden, cross)


def training_prediction(path: str | Path, found: Detected, override: str | None = None) -> str:
    """The prediction type training uses for this file (`override` = the Prediction type setting,
    None for auto), or CheckpointRefused when it can't train as it is: no VAE to encode the
    images, or an SD2 file whose prediction type is neither readable nor set."""
    path = Path(path)
    prediction = override or found.prediction_type
    if prediction is None:
        raise _refuse(path, " ".join(found.notes[-1:]),
                      "Set Prediction type (More settings ▸ Model) to epsilon for SD2 512 base "
                      "models or v_prediction for 768-v models.")
    if not found.has_vae:
        raise _refuse(path, "no VAE is baked in.",
                      "Use a checkpoint that includes its VAE (most do).")
    return prediction
