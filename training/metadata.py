"""The safetensors header (kohya `ss_*` + `modelspec.*`) and A1111 sidecar written with a LoRA."""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from dataclasses import dataclass, field
from typing import Any

from studio.config import TrainConfig, unet_targets


@dataclass(frozen=True)
class TrainingFacts:
    """What the engine knows at export time that isn't in the config."""

    base_model_name: str        # basename of the base model folder/file or the hub id
    base_model_version: str     # "sd_v1" ("sd_v2", "sdxl_base_v1-0" later); "_v" added here
    prediction_type: str        # "epsilon" | "v_prediction"
    num_images: int
    steps: int                  # optimizer steps done
    epochs: int                 # epochs done
    max_steps: int              # planned total
    tag_frequency: dict[str, int] = field(hash=False)
    dataset_name: str           # basename of the dataset folder
    training_started_at: float  # unix time
    session_id: int
    finished_at: float | None = None
    # Resolved values where the config may say "auto"; None falls back to the config's value.
    mixed_precision: str | None = None
    optimizer: str = "torch.optim.adamw.AdamW"

    def at(self, step: int, epochs: int) -> "TrainingFacts":
        """These facts for a LoRA saved now, after `step` steps and `epochs` epochs."""
        return dataclasses.replace(self, steps=step, epochs=epochs, finished_at=time.time())


# lora-formats.md §7.3: adapters append "/lora" to the base architecture id.
ARCHITECTURES = {"sd_v1": "stable-diffusion-v1", "sd_v2": "stable-diffusion-v2-512",
                 "sdxl_base_v1-0": "stable-diffusion-xl-v1-base"}
# A1111's sidecar "sd version" values (ui_edit_user_metadata.py).
SD_VERSIONS = {"sd_v1": "SD1", "sd_v2": "SD2", "sdxl_base_v1-0": "SDXL"}
# modelspec "implementation": kohya writes "diffusers" for diffusers-layout names (SD1) and the
# generative-models URL for SGM-layout SDXL names (lora-formats.md §7.3, §7.5).
SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def base_model_version(facts: TrainingFacts) -> str:
    """kohya's ss_base_model_version: `sd_v1`, `sd_v1_v` for v-prediction, … (§7.1). kohya adds
    `_v` only for SD1/SD2; SDXL is always `sdxl_base_v1-0` (modelspec.prediction_type says v)."""
    v_pred = facts.prediction_type == "v_prediction"
    suffix = "_v" if v_pred and facts.base_model_version in ("sd_v1", "sd_v2") else ""
    return facts.base_model_version + suffix


def architecture(facts: TrainingFacts) -> str:
    arch = ARCHITECTURES.get(facts.base_model_version, facts.base_model_version)
    if facts.base_model_version == "sd_v2" and facts.prediction_type == "v_prediction":
        arch = "stable-diffusion-v2-768-v"
    return arch + "/lora"


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(int(ts)).astimezone().isoformat()


def build_metadata(cfg: TrainConfig, facts: TrainingFacts) -> dict[str, str]:
    """Every header value as a string (safetensors metadata is str -> str; nested data is JSON).

    The hashes (`sshs_*`, `modelspec.hash_sha256`) and `format` are added by export.save_lora,
    which computes them from the bytes it writes.
    """
    finished = facts.finished_at if facts.finished_at is not None else time.time()
    precision = facts.mixed_precision or str(cfg.mixed_precision)
    res = cfg.resolution
    # kohya writes the CLI --network_args as JSON of strings; ours is the PEFT target list.
    network_args = {"target_modules": ",".join(unet_targets(cfg))}
    meta = {
        # The minimum keys other tools need to load/filter (kohya SS_METADATA_MINIMUM_KEYS).
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(cfg.rank),
        "ss_network_alpha": str(float(cfg.alpha)),
        "ss_network_args": _json(network_args),
        # A1111 classes SD1 vs SD2 vs SDXL from these two (lora-formats.md §7.4).
        "ss_v2": str(facts.base_model_version.startswith("sd_v2")),
        "ss_base_model_version": base_model_version(facts),
        "ss_network_train_unet_only": "True",
        "ss_output_name": cfg.output_name,
        "ss_sd_model_name": facts.base_model_name,
        "ss_training_started_at": str(facts.training_started_at),
        "ss_training_finished_at": str(finished),
        "ss_session_id": str(facts.session_id),
        # kohya stores the parsed tuple, so readers see "(512, 512)".
        "ss_resolution": str((res, res)),
        "ss_num_train_images": str(facts.num_images),
        "ss_tag_frequency": _json({facts.dataset_name: facts.tag_frequency}),
        "ss_dataset_dirs": _json({facts.dataset_name: {"n_repeats": 1,
                                                       "img_count": facts.num_images}}),
        "ss_steps": str(facts.steps),
        "ss_max_train_steps": str(facts.max_steps),
        "ss_epoch": str(facts.epochs),
        "ss_num_epochs": str(cfg.epochs if cfg.max_steps == 0 else facts.epochs),
        "ss_batch_size_per_device": str(cfg.batch_size),
        "ss_gradient_accumulation_steps": str(cfg.gradient_accumulation_steps),
        "ss_total_batch_size": str(cfg.batch_size * cfg.gradient_accumulation_steps),
        "ss_learning_rate": str(cfg.learning_rate),
        "ss_unet_lr": str(cfg.learning_rate),
        "ss_text_encoder_lr": "None",
        "ss_lr_scheduler": str(cfg.lr_scheduler),
        "ss_lr_warmup_steps": str(cfg.lr_warmup_steps),
        # kohya: "<class path>(<k=v,...>)" of the optimizer actually used.
        "ss_optimizer": f"{facts.optimizer}(weight_decay={cfg.weight_decay})",
        "ss_max_grad_norm": str(cfg.max_grad_norm),
        "ss_mixed_precision": precision,
        "ss_gradient_checkpointing": str(cfg.gradient_checkpointing),
        "ss_seed": str(cfg.seed),
        "ss_clip_skip": "None",
        # Stability Model Metadata spec 1.0.1 (lora-formats.md §7.3); SwarmUI and Forge read it.
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": architecture(facts),
        "modelspec.implementation": SGM_IMPLEMENTATION
        if facts.base_model_version.startswith("sdxl") else "diffusers",
        "modelspec.title": cfg.output_name,
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.prediction_type": "v" if facts.prediction_type == "v_prediction" else "epsilon",
        "modelspec.date": _iso(finished),
        "modelspec.usage_hint": usage_hint(cfg),
    }
    if cfg.trigger_word:
        meta["modelspec.trigger_phrase"] = cfg.trigger_word
    if cfg.author:
        meta["modelspec.author"] = cfg.author
    if cfg.description:
        meta["modelspec.description"] = cfg.description
        meta["ss_training_comment"] = cfg.description
    return meta


def usage_hint(cfg: TrainConfig) -> str:
    hint = "Load as a LoRA at weight 1.0; lower it to soften the effect."
    if cfg.trigger_word:
        hint = f"Put '{cfg.trigger_word}' in the prompt. " + hint
    return hint


def a1111_sidecar(cfg: TrainConfig, facts: TrainingFacts) -> dict[str, Any]:
    """A1111/Forge `<name>.json` (InvokeAI reads `activation text` too): lora-formats.md §7.4."""
    return {
        "description": cfg.description,
        "sd version": SD_VERSIONS.get(facts.base_model_version, "Unknown"),
        "activation text": cfg.trigger_word,
        "preferred weight": 1.0,
        "negative text": "",
        "notes": usage_hint(cfg),
    }
