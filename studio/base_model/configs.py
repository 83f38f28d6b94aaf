"""The shipped diffusers config folders (assets/configs) single-file base models load with, and a
config folder's native image size (no torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

ASSETS_CONFIGS = Path(__file__).resolve().parents[2] / "assets" / "configs"
# A folder with the same sub-folders (sd15, sd2-base, sd2-v, sdxl-base) used instead of
# assets/configs, for checkpoints whose layer sizes differ from the public models' (distilled or
# tiny ones); the GUI, `check` and the worker all read it, so they agree on such a file.
CONFIGS_ENV = "LORA_STUDIO_MODEL_CONFIGS"
# kohya's ss_base_model_version for each family (what a LoRA's metadata says it was trained on).
VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def config_root() -> Path:
    return Path(os.environ[CONFIGS_ENV]) if os.environ.get(CONFIGS_ENV) else ASSETS_CONFIGS


def config_name(architecture: str, prediction_type: str | None) -> str:
    """The config folder's name for an architecture (SD2: by prediction type, 512 base when
    unknown)."""
    if architecture == "sd2":
        return "sd2-v" if prediction_type == "v_prediction" else "sd2-base"
    return {"sd1": "sd15", "sdxl": "sdxl-base"}[architecture]


def config_folder(architecture: str, prediction_type: str | None) -> Path:
    return config_root() / config_name(architecture, prediction_type)


def read_json(path: Path) -> dict:
    """A JSON object from disk, or {} when it is missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def native_resolution(folder: Path) -> int:
    """The image size the model was trained at: UNet sample_size x the VAE's downscale factor
    (2 per down block after the first), e.g. 64 x 8 = 512 for SD1.5; 0 when unknown."""
    sample = read_json(folder / "unet" / "config.json").get("sample_size")
    vae = read_json(folder / "vae" / "config.json").get("block_out_channels") or ()
    if isinstance(sample, (list, tuple)):
        sample = sample[0] if sample else None
    if not isinstance(sample, int) or not vae:
        return 0
    return sample * 2 ** (len(vae) - 1)


def family_of(unet_config: dict) -> str:
    """"sdxl", "sd2" or "sd1" for a diffusers UNet config: the rule the worker names the LoRA's
    base-model version by (kohya ss_base_model_version)."""
    if unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd2" if unet_config.get("cross_attention_dim") == 1024 else "sd1"
