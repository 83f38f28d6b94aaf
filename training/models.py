"""Load a Stable Diffusion base model for training, and give its UNet a LoRA."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from studio.base_model.configs import VERSIONS, family_of
from studio.base_model.inspect import check_folder, locate
from studio.config import PredictionType, TrainConfig, unet_targets
from studio.errors import UserError



class ModelError(UserError):
    """A base model that cannot be used, with what to do about it."""
    field = "base_model"


@dataclass
class BaseModel:
    name: str  # what metadata and the UI show: folder or file name, or Hub id
    folder: Path  # the diffusers folder the components came from (single files: assembled)
    version: str  # kohya's ss_base_model_version family: sd_v1, sd_v2, sdxl_base_v1-0
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler
    tokenizer_2: CLIPTokenizer | None = None  # SDXL
    text_encoder_2: torch.nn.Module | None = None  # SDXL (CLIPTextModelWithProjection)
    notes: list[str] = field(default_factory=list)  # what detection found worth telling

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    @property
    def is_sdxl(self) -> bool:
        return self.version.startswith("sdxl")

    @property
    def text_encoders(self) -> tuple:
        return (self.text_encoder,) if self.text_encoder_2 is None else \
            (self.text_encoder, self.text_encoder_2)


def resolve_folder(base_model: str, project_root: Path) -> tuple[Path, str]:
    """A local diffusers folder or single .safetensors file for a path or a Hub id (from the
    local cache only), and its name; the GUI's verdict (studio.base_model.inspect) is the same
    function, so both refuse with one text."""
    return locate(base_model, project_root)


def _check_tokenizer(tokenizer, text_encoder, where: Path) -> None:
    # transformers 5 builds a 2-token tokenizer without complaint when vocab/merges are missing
    # (machine-notes.md §2); the text encoder then fails with an opaque IndexError.
    if len(tokenizer) <= 258 or len(tokenizer) > text_encoder.config.vocab_size:
        raise ModelError(f"The tokenizer in {where} has {len(tokenizer)} entries for a text "
                         f"encoder of {text_encoder.config.vocab_size}: its vocab.json or "
                         f"merges.txt is missing or wrong.", "Restore the tokenizer files.")




def _load_folder(folder: Path, name: str, unet_dtype: torch.dtype, text_dtype: torch.dtype,
                 vae_dtype: torch.dtype) -> BaseModel:
    check_folder(folder)  # the refusals the GUI shows, before seconds of loading
    kw = dict(local_files_only=True)
    # Every part in an explicit dtype: transformers loads in the stored dtype by default, so a
    # folder saved in fp16 gave fp16 text encoders beside an fp32 UNet on the CPU, and samples
    # failed with "mat1 and mat2 must have the same dtype" (issue 13 item 2).
    try:
        # use_safetensors: a folder holding only pickled .bin weights is refused rather than
        # unpickled (never run code from a user's file; issue 8).
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet",
                                                    use_safetensors=True, torch_dtype=unet_dtype,
                                                    **kw)
        # from_pretrained reads the model's own scheduler config, so prediction_type,
        # rescale_betas_zero_snr and timestep_spacing carry over; building DDPMScheduler from
        # hand-picked kwargs silently fell back to epsilon and wrecked v-prediction models.
        noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **kw)
        version = VERSIONS[family_of(unet.config)]
        base = BaseModel(
            name, folder, version,
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **kw),
            CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                          use_safetensors=True, dtype=text_dtype, **kw),
            AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True,
                                          torch_dtype=vae_dtype, **kw),
            unet, noise_scheduler)
        if version.startswith("sdxl"):
            base.tokenizer_2 = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", **kw)
            base.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
                folder, subfolder="text_encoder_2", use_safetensors=True, dtype=text_dtype, **kw)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelError(f"Could not load the model in {folder}: {exc}",
                         "The folder is incomplete or damaged; download or copy it again.") from None
    return base


def _load_file(path: Path, cfg: TrainConfig, unet_dtype: torch.dtype, text_dtype: torch.dtype,
               vae_dtype: torch.dtype) -> BaseModel:
    from training import single_file

    override = None if cfg.prediction_type == PredictionType.auto else cfg.prediction_type.value
    # One file loads in one dtype: the target one when every part wants it (generate, merge:
    # an SDXL file in fp16 never passes through ~13.6 GiB of fp32 host memory, issue 17 item
    # 10), else fp32 and each part cast after.
    same = unet_dtype == text_dtype == vae_dtype
    try:
        ck = single_file.load(path, prediction_type=override,
                              torch_dtype=unet_dtype if same else torch.float32)
    except single_file.SingleFileError as exc:
        raise ModelError(str(exc), exc.hint) from None
    text_2 = None if ck.text_encoder_2 is None else ck.text_encoder_2.to(text_dtype)
    return BaseModel(path.stem, ck.folder, ck.version, ck.tokenizer,
                     ck.text_encoder.to(text_dtype), ck.vae.to(vae_dtype),
                     ck.unet.to(unet_dtype), ck.noise_scheduler, ck.tokenizer_2,
                     text_2, list(ck.detected.notes))


def load_base(cfg: TrainConfig, project_root: Path, unet_dtype: torch.dtype = torch.float32,
              text_dtype: torch.dtype | None = None,
              vae_dtype: torch.dtype = torch.float32) -> BaseModel:
    """Any supported base model, frozen, with its training noise scheduler. The parts come in
    the dtypes asked for, whatever the stored one: the UNet in `unet_dtype`, the text encoders
    in `text_dtype` (default: the UNet's), the VAE in `vae_dtype` (fp32 for training: the SDXL
    VAE overflows in fp16)."""
    path, name = resolve_folder(cfg.base_model, project_root)
    text_dtype = text_dtype or unet_dtype
    base = _load_file(path, cfg, unet_dtype, text_dtype, vae_dtype) if path.is_file() else \
        _load_folder(path, name, unet_dtype, text_dtype, vae_dtype)
    _check_tokenizer(base.tokenizer, base.text_encoder, base.folder / "tokenizer")
    if base.tokenizer_2 is not None:
        _check_tokenizer(base.tokenizer_2, base.text_encoder_2, base.folder / "tokenizer_2")
    if cfg.prediction_type != PredictionType.auto:
        base.noise_scheduler = DDPMScheduler.from_config(
            base.noise_scheduler.config, prediction_type=cfg.prediction_type.value)
    context = sum(te.config.hidden_size for te in base.text_encoders)
    if base.unet.config.cross_attention_dim != context:
        raise ModelError(f"This model's UNet expects text features of width "
                         f"{base.unet.config.cross_attention_dim}, its text encoders give "
                         f"{context}: the parts belong to different models.",
                         "Use a complete model folder or checkpoint.")
    for module in (*base.text_encoders, base.vae, base.unet):
        module.requires_grad_(False)
        module.eval()
    return base


def lora_config(cfg: TrainConfig) -> LoraConfig:
    # init_lora_weights=True: A is Kaiming-uniform, B is zero, so B·A = 0 and the model at step 0
    # is exactly the base model (Hu et al. 2021, "LoRA", §4.1).
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True,
                      target_modules=list(unet_targets(cfg)))


def text_lora_targets(base: BaseModel, encoder) -> list[str]:
    """The Linears of `encoder` that get a LoRA: kohya's set (attention and MLP), minus the
    layers whose output the UNet never sees. SDXL conditions on the first encoder's
    penultimate hidden states (cache.encode_text), so its last layer gets no gradient: a LoRA
    there cannot learn, and under DDP it failed step 2 with "did not receive grad" (issue 17
    item 5). The second encoder's last layer feeds the pooled embedding, so it keeps its LoRA."""
    from training.export import KOHYA_TE_TARGETS

    unused = None
    if base.is_sdxl and encoder is base.text_encoder:
        unused = f"layers.{encoder.config.num_hidden_layers - 1}."
    return [name for name, _ in encoder.named_modules()
            if name.rsplit(".", 1)[-1] in KOHYA_TE_TARGETS
            and (unused is None or unused not in name)]


def add_text_lora(base: BaseModel, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """A LoRA on the text encoders' attention and MLP Linears (text_lora_targets), trainable."""
    params = []
    for encoder in base.text_encoders:
        encoder.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True,
                                       target_modules=text_lora_targets(base, encoder)))
        encoder.train()
        trainable = [p for p in encoder.parameters() if p.requires_grad]
        for p in trainable:
            p.data = p.data.float()
        params += trainable
    return params


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
