"""Build tiny, random Stable Diffusion models offline: SD1.x/SDXL folders, SD1/SD2/SDXL files.

For tests and the demo. Same classes and layouts as the real models, so they load through the
same code path as any base model; sizes from ../shared/reference/machine-notes.md §2 (≈1 M UNet
params, 5 MB on disk, byte-identical across builds for one seed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from training.clip_bpe import bytes_to_unicode

# Words every tiny-model caption uses get a single token each; anything else falls back to bytes.
WORDS = ("a an the of on in with and style zxq red green blue yellow white black purple orange "
         "circle square triangle star shape small large big background left right top bottom "
         "centre center drawing painting photo picture").split()




def write_tokenizer(folder: Path, words: tuple[str, ...] = WORDS) -> None:
    """CLIP-format vocab.json + merges.txt: the byte alphabet plus one merge chain per word.

    transformers 5's CLIPTokenizer(vocab_file=...) silently ignores the files
    (machine-notes.md §2), so the folder is loaded with from_pretrained instead.
    """
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pair = f"{symbols[0]} {symbols[1]}"
            merged = symbols[0] + symbols[1]
            if pair not in merges:
                merges.append(pair)
                vocab_list.append(merged)
            symbols = [merged] + symbols[2:]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab: dict[str, int] = {}
    for token in vocab_list:
        vocab.setdefault(token, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))


# Shared by both builders: the block layout of the tiny UNet, the VAE (vae_scale_factor 8 as in
# real SD), and the CLIP text-encoder size.
UNET_LAYOUT = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                   out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
CLIP_SIZE = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=77, vocab_size=1000, bos_token_id=0, eos_token_id=1,
                 pad_token_id=1, projection_dim=32)


def _vae(**extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16, 32, 32), in_channels=3, out_channels=3,
                         latent_channels=4, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, **extra)


def _save(folder: Path, pipeline: str, components: dict) -> Path:
    """save_pretrained each component into its subfolder and write model_index.json."""
    index = {"_class_name": pipeline, "_diffusers_version": "0.42.1"}
    for name, module in components.items():
        module.save_pretrained(folder / name)
        library = "transformers" if "CLIP" in type(module).__name__ else "diffusers"
        index[name] = [library, type(module).__name__]
    for name in ("tokenizer", "tokenizer_2"):
        if (folder / name).is_dir():
            index[name] = ["transformers", "CLIPTokenizer"]
    if pipeline == "StableDiffusionPipeline":
        index.update(feature_extractor=[None, None], safety_checker=[None, None],
                     requires_safety_checker=False)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def build(folder: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write a tiny SD1.x diffusers folder at `folder` and return it."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_LAYOUT, cross_attention_dim=32, attention_head_dim=8)
    vae = _vae()
    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_SIZE))
    write_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    assert len(tokenizer) <= text_encoder.config.vocab_size, len(tokenizer)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    return _save(folder, "StableDiffusionPipeline", dict(
        unet=unet, vae=vae, text_encoder=text_encoder, scheduler=scheduler))


def build_sdxl(folder: Path, seed: int = 0) -> Path:
    """A tiny random SDXL-architecture folder: two text encoders (pooled projection from the
    second), `text_time` added conditioning (machine-notes.md §2)."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                              CLIPTokenizer)

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **UNET_LAYOUT, cross_attention_dim=64, attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32)
    vae = _vae(force_upcast=True)
    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_SIZE))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_SIZE))
    for sub in ("tokenizer", "tokenizer_2"):
        write_tokenizer(folder / sub)
    assert len(CLIPTokenizer.from_pretrained(folder / "tokenizer")) <= 1000
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing="leading", steps_offset=1)
    return _save(folder, "StableDiffusionXLPipeline", dict(
        unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        scheduler=scheduler))


# --- tiny single-file checkpoints (the real LDM / SGM key layouts) -------------------------------

def single_file_parts(architecture: str, seed: int = 0) -> dict:
    """Tiny random components of "sd1", "sd2" or "sdxl" for a single-file checkpoint.

    SD2 and SDXL's second encoder are OpenCLIP-style (gelu). SDXL's two encoders have different
    widths (32 + 48 = cross-attention 80) as in real SDXL (768 + 1280): diffusers' single-file
    reader tells them apart by width (machine-notes.md §2).
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    if architecture == "sd1":
        unet = UNet2DConditionModel(**UNET_LAYOUT, cross_attention_dim=32, attention_head_dim=8)
        return dict(unet=unet, vae=_vae(), text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_SIZE)))
    linear = dict(attention_head_dim=(2, 4), use_linear_projection=True)
    if architecture == "sd2":
        unet = UNet2DConditionModel(**UNET_LAYOUT, cross_attention_dim=32, **linear)
        return dict(unet=unet, vae=_vae(), text_encoder=CLIPTextModel(
            CLIPTextConfig(**{**CLIP_SIZE, "hidden_act": "gelu"})))
    unet = UNet2DConditionModel(
        **{**UNET_LAYOUT, "layers_per_block": 2}, cross_attention_dim=80, **linear,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, transformer_layers_per_block=(1, 2))
    return dict(unet=unet, vae=_vae(), text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_SIZE)),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(
                    **{**CLIP_SIZE, "hidden_act": "gelu", "hidden_size": 48})))


def write_single_file(path: Path, parts: dict, extra_keys: tuple[str, ...] = ()) -> Path:
    """The components as one .safetensors checkpoint; `extra_keys` adds empty marker tensors
    such as "v_pred" / "ztsnr" (how NoobAI-style v-prediction SDXL files mark themselves)."""
    from safetensors.torch import save_file

    from training import ldm_convert as lc

    sd = {name: module.state_dict() for name, module in parts.items()}
    unet, vae = parts["unet"], parts["vae"]
    if "text_encoder_2" in parts:
        tensors = lc.to_sgm(sd["unet"], unet.config, sd["vae"], vae.config, sd["text_encoder"],
                            sd["text_encoder_2"])
    elif parts["text_encoder"].config.hidden_act == "gelu":  # SD2: OpenCLIP-H layout
        tensors = {**lc.unet_to_ldm(sd["unet"], unet.config),
                   **lc.vae_to_ldm(sd["vae"], vae.config),
                   **lc.text_encoder_to_open_clip(sd["text_encoder"], "cond_stage_model.model.")}
    else:
        tensors = lc.to_ldm(sd["unet"], unet.config, sd["vae"], vae.config, sd["text_encoder"])
    tensors.update({key: torch.tensor([]) for key in extra_keys})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def write_configs(dest: Path, shipped: Path, parts: dict) -> Path:
    """The shipped config folder `shipped` (assets/configs/<name>) copied to `dest` with each
    component's config.json swapped for the tiny one's, and tiny vocabularies under the shipped
    tokenizer configs (so SDXL's "!" padding is still what loads)."""
    import shutil

    shutil.copytree(shipped, dest, dirs_exist_ok=True)
    for name, module in parts.items():  # diffusers ConfigMixin / transformers PretrainedConfig
        saver = getattr(module, "save_config", None) or module.config.save_pretrained
        saver(dest / name)
    for tok in dest.glob("tokenizer*"):
        keep = {n: (tok / n).read_text() for n in ("tokenizer_config.json",
                                                   "special_tokens_map.json")}
        write_tokenizer(tok, WORDS)
        for name, text in keep.items():
            (tok / name).write_text(text)
    return dest


def build_single_file(path: Path, architecture: str, configs_root: Path, seed: int = 0,
                      extra_keys: tuple[str, ...] = ()) -> Path:
    """A tiny single-file checkpoint at `path`, and under `configs_root` the config folder it
    loads with (same name as in assets/configs): point LORA_STUDIO_MODEL_CONFIGS at
    `configs_root` and the worker, `check` and the GUI treat the file like a real one."""
    from studio.base_model import configs

    parts = single_file_parts(architecture, seed)
    prediction = "v_prediction" if "v_pred" in extra_keys else "epsilon"
    name = configs.config_name(architecture, prediction)
    write_configs(Path(configs_root) / name, configs.ASSETS_CONFIGS / name, parts)
    return write_single_file(Path(path), parts, extra_keys)
