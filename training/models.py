"""Load a Stable Diffusion base model for training, and give its UNet a LoRA."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig
from transformers import CLIPTextModel, CLIPTokenizer

from studio.config import PredictionType, TrainConfig, unet_targets

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class ModelError(ValueError):
    """A base model that cannot be used, with what to do about it."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


@dataclass
class BaseModel:
    name: str  # what metadata and the UI show: folder name or Hub id
    folder: Path  # the diffusers folder the components came from
    version: str  # kohya's ss_base_model_version family: "sd_v1" (SD2/SDXL: later)
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type


def resolve_folder(base_model: str, project_root: Path) -> tuple[Path, str]:
    """A local diffusers folder for a path or a Hub id (from the local cache only), and its name."""
    path = Path(base_model).expanduser()
    if not path.is_absolute():
        path = project_root / path
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(f"{path.name} is a pickle checkpoint, which can run arbitrary code when "
                         f"loaded; LoRA Studio does not open those.",
                         "Convert it to .safetensors (or use the diffusers folder of the model).")
    if path.suffix.lower() == ".safetensors":
        raise ModelError(f"{path.name}: single-file checkpoints are not supported yet.",
                         "Use the model's diffusers folder (with model_index.json) for now.")
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise ModelError(f"{path} is not a diffusers model folder (no model_index.json).",
                             "Choose the folder that contains unet/, vae/, text_encoder/ and "
                             "tokenizer/.")
        return path, path.name
    if "/" in base_model and not Path(base_model).is_absolute() and base_model.count("/") == 1:
        from huggingface_hub import snapshot_download
        try:
            folder = snapshot_download(base_model, local_files_only=True)
        except Exception:  # noqa: BLE001 - any hub failure means "not in the local cache"
            raise ModelError(f"The model {base_model!r} is not in the local Hugging Face cache, "
                             f"and LoRA Studio never downloads during training.",
                             f"Download it once (huggingface-cli download {base_model}) or choose "
                             f"a model folder on disk.") from None
        return Path(folder), base_model
    raise ModelError(f"Base model not found: {path}", "Check the path in the Base model setting.")


def load_base(cfg: TrainConfig, project_root: Path,
              unet_dtype: torch.dtype = torch.float32) -> BaseModel:
    folder, name = resolve_folder(cfg.base_model, project_root)
    kw = dict(local_files_only=True)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **kw)
        # use_safetensors: a folder holding only pickled .bin weights is refused rather than
        # unpickled (never run code from a user's file; issue 8).
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                     use_safetensors=True, **kw)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True, **kw)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet",
                                                    use_safetensors=True, torch_dtype=unet_dtype,
                                                    **kw)
        # from_pretrained reads the model's own scheduler config, so prediction_type,
        # rescale_betas_zero_snr and timestep_spacing carry over; building DDPMScheduler from
        # hand-picked kwargs silently fell back to epsilon and wrecked v-prediction models.
        noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **kw)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelError(f"Could not load the model in {folder}: {exc}",
                         "The folder is incomplete or damaged; download or copy it again.") from None
    # transformers 5 builds a 2-token tokenizer without complaint when vocab/merges are missing
    # (machine-notes.md §2); the text encoder then fails with an opaque IndexError.
    if len(tokenizer) <= 258 or len(tokenizer) > text_encoder.config.vocab_size:
        raise ModelError(f"The tokenizer in {folder / 'tokenizer'} has {len(tokenizer)} entries "
                         f"for a text encoder of {text_encoder.config.vocab_size}: its vocab.json "
                         f"or merges.txt is missing or wrong.",
                         "Restore the tokenizer files of this model.")
    if cfg.prediction_type != PredictionType.auto:
        noise_scheduler = DDPMScheduler.from_config(noise_scheduler.config,
                                                    prediction_type=cfg.prediction_type.value)
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise ModelError("This model's UNet and text encoder do not match (SDXL and SD2 come "
                         "with a later version).", "Choose an SD1.x model.")
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
        module.eval()
    return BaseModel(name, folder, "sd_v1", tokenizer, text_encoder, vae, unet, noise_scheduler)


def lora_config(cfg: TrainConfig) -> LoraConfig:
    # init_lora_weights=True: A is Kaiming-uniform, B is zero, so B·A = 0 and the model at step 0
    # is exactly the base model (Hu et al. 2021, "LoRA", §4.1).
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True,
                      target_modules=list(unet_targets(cfg)))


def add_lora(unet: UNet2DConditionModel, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """Attach the LoRA to the (frozen) UNet; return the trainable parameters."""
    try:
        unet.add_adapter(lora_config(cfg))
    except ValueError as exc:
        raise ModelError(f"target layers {list(unet_targets(cfg))} do not match any UNet "
                         f"layer ({exc}).", "Use layer names such as to_q, to_k, to_v, to_out.0.")
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # LoRA weights train in fp32 even when the frozen weights are half precision
        p.data = p.data.float()
    return params
