"""Rename diffusers state dicts (UNet, VAE, CLIP text encoders) to the single-file layouts: LDM for
SD1.x, SGM (LDM blocks + `label_emb`, OpenCLIP second encoder) for SDXL."""

from __future__ import annotations

from collections.abc import Mapping

import torch

# A1111 (`sd_models.load_model_weights` into the CompVis LatentDiffusion), ComfyUI
# (`model_detection.py` reads input_blocks/output_blocks) and diffusers' `from_single_file`
# (`single_file_utils.py`, the reverse of this file) all read these prefixes.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."
# SDXL (Stability's `sgm` repo, what A1111/ComfyUI/Forge and diffusers' from_single_file read):
# CLIP-L under embedder 0 with HF names, OpenCLIP-bigG under embedder 1 with OpenCLIP names.
XL_TEXT_PREFIX = "conditioner.embedders.0.transformer.text_model."
XL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
# OpenCLIP `ResidualAttentionBlock` names for the HF CLIP layer parts (q/k/v are fused apart).
OPEN_CLIP_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1",
                   "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}

# CompVis `ResBlock` (openaimodel.py): in_layers = [GroupNorm, SiLU, conv], emb_layers =
# [SiLU, Linear], out_layers = [GroupNorm, SiLU, Dropout, conv]; hence the indices.
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3",
               "conv_shortcut": "skip_connection"}
# The VAE's ResnetBlock keeps norm1/conv1/norm2/conv2; only the shortcut is renamed.
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
# The VAE's AttnBlock uses 1×1 convs q/k/v/proj_out where diffusers has Linear layers.
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
                 "to_out.0": "proj_out"}
# Transformer2DModel (SpatialTransformer in LDM) keeps every inner name: norm, proj_in,
# transformer_blocks.N.attn1.to_q, ff.net.0.proj, proj_out.
SAME: dict[str, str] = {}

ModuleMap = dict[str, tuple[str, dict[str, str]]]  # diffusers module -> (LDM module, inner renames)


def _block_types(config: Mapping, key: str, n: int) -> list[str]:
    types = list(config[key])
    if len(types) != n:
        raise ValueError(f"{key} has {len(types)} entries for {n} blocks")
    return types


def unet_module_map(config: Mapping) -> ModuleMap:
    """diffusers UNet2DConditionModel modules -> CompVis `UNetModel` modules, from the config.

    input_blocks.0 is conv_in; then each down block contributes `layers_per_block` entries
    (resnet at .0, attention at .1 for CrossAttn blocks) and, except the last block, a
    downsample entry (`.0.op`). output_blocks: `layers_per_block + 1` entries per up block,
    the upsampler inside the block's last entry, after the attention if there is one.
    """
    unsupported = {k: config.get(k) for k in ("class_embed_type", "addition_embed_type",
                                              "num_class_embeds", "time_cond_proj_dim",
                                              "encoder_hid_dim")
                   if config.get(k) is not None}
    lpb = config["layers_per_block"]
    if unsupported or not isinstance(lpb, int) or \
            config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"not an SD1.x-style UNet (layers_per_block={lpb!r}, {unsupported})")
    n = len(config["block_out_channels"])
    m: ModuleMap = {"conv_in": ("input_blocks.0.0", SAME),
                    "time_embedding.linear_1": ("time_embed.0", SAME),
                    "time_embedding.linear_2": ("time_embed.2", SAME),
                    "conv_norm_out": ("out.0", SAME), "conv_out": ("out.2", SAME),
                    "mid_block.resnets.0": ("middle_block.0", UNET_RESNET),
                    "mid_block.attentions.0": ("middle_block.1", SAME),
                    "mid_block.resnets.1": ("middle_block.2", UNET_RESNET)}
    i = 1
    for b, kind in enumerate(_block_types(config, "down_block_types", n)):
        for j in range(lpb):
            m[f"down_blocks.{b}.resnets.{j}"] = (f"input_blocks.{i}.0", UNET_RESNET)
            if kind.startswith("CrossAttn"):
                m[f"down_blocks.{b}.attentions.{j}"] = (f"input_blocks.{i}.1", SAME)
            i += 1
        if b < n - 1:
            m[f"down_blocks.{b}.downsamplers.0.conv"] = (f"input_blocks.{i}.0.op", SAME)
            i += 1
    i = 0
    for b, kind in enumerate(_block_types(config, "up_block_types", n)):
        attention = kind.startswith("CrossAttn")
        for j in range(lpb + 1):
            m[f"up_blocks.{b}.resnets.{j}"] = (f"output_blocks.{i}.0", UNET_RESNET)
            if attention:
                m[f"up_blocks.{b}.attentions.{j}"] = (f"output_blocks.{i}.1", SAME)
            if j == lpb and b < n - 1:
                m[f"up_blocks.{b}.upsamplers.0.conv"] = (
                    f"output_blocks.{i}.{2 if attention else 1}.conv", SAME)
            i += 1
    return m


def vae_module_map(config: Mapping) -> ModuleMap:
    """diffusers AutoencoderKL modules -> CompVis `AutoencoderKL` (encoder.down / decoder.up).

    LDM numbers the decoder's `up` levels by resolution (0 = full size), diffusers' up_blocks in
    execution order (0 = smallest), so decoder up_blocks.b is up.{n-1-b}.
    """
    n = len(config["block_out_channels"])
    lpb = config["layers_per_block"]
    m: ModuleMap = {}
    for name in ("quant_conv", "post_quant_conv"):
        m[name] = (name, SAME)
    for part in ("encoder", "decoder"):
        m[f"{part}.conv_in"] = (f"{part}.conv_in", SAME)
        m[f"{part}.conv_out"] = (f"{part}.conv_out", SAME)
        m[f"{part}.conv_norm_out"] = (f"{part}.norm_out", SAME)
        m[f"{part}.mid_block.resnets.0"] = (f"{part}.mid.block_1", VAE_RESNET)
        m[f"{part}.mid_block.resnets.1"] = (f"{part}.mid.block_2", VAE_RESNET)
        m[f"{part}.mid_block.attentions.0"] = (f"{part}.mid.attn_1", VAE_ATTENTION)
    for b in range(n):
        for j in range(lpb):
            m[f"encoder.down_blocks.{b}.resnets.{j}"] = (f"encoder.down.{b}.block.{j}", VAE_RESNET)
        if b < n - 1:
            m[f"encoder.down_blocks.{b}.downsamplers.0.conv"] = (
                f"encoder.down.{b}.downsample.conv", SAME)
        level = n - 1 - b
        for j in range(lpb + 1):
            m[f"decoder.up_blocks.{b}.resnets.{j}"] = (f"decoder.up.{level}.block.{j}", VAE_RESNET)
        if b < n - 1:
            m[f"decoder.up_blocks.{b}.upsamplers.0.conv"] = (f"decoder.up.{level}.upsample.conv",
                                                             SAME)
    return m


def _rename(key: str, modules: ModuleMap) -> str:
    """The LDM name of one diffusers key: longest module prefix, then the inner rename."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        found = modules.get(".".join(parts[:cut]))
        if found is not None:
            target, inner = found
            rest = ".".join(parts[cut:])
            for old, new in inner.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            return f"{target}.{rest}"
    # Strict on purpose: a PEFT-wrapped key (`base_layer`, `lora_A`) or an unknown block must not
    # end up in a checkpoint under a name no reader expects.
    raise KeyError(f"no LDM name for diffusers key {key!r}")


def _convert(state_dict: Mapping[str, torch.Tensor], modules: ModuleMap, prefix: str
             ) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = prefix + _rename(key, modules)
        if name in out:
            raise ValueError(f"two diffusers keys map to {name!r}")
        out[name] = value
    return out


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping
                ) -> dict[str, torch.Tensor]:
    return _convert(state_dict, unet_module_map(config), UNET_PREFIX)


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping
               ) -> dict[str, torch.Tensor]:
    out = _convert(state_dict, vae_module_map(config), VAE_PREFIX)
    for name, value in out.items():
        # Linear [C, C] -> 1×1 conv [C, C, 1, 1] (LDM `AttnBlock`); diffusers' reader squeezes.
        if ".mid.attn_1." in name and name.endswith("weight") and value.dim() == 2:
            out[name] = value[:, :, None, None]
    return out


def text_encoder_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel -> `cond_stage_model.transformer.text_model.*` (HF names kept, as in SD1.5).

    transformers >= 5.6 flattened CLIPTextModel (no `text_model.` in its own names; files on disk
    keep it, lora-formats.md §2), so the prefix is restored here whichever version made the dict.
    """
    out = {TEXT_PREFIX + k.removeprefix("text_model."): v for k, v in state_dict.items()}
    ids = TEXT_PREFIX + "embeddings.position_ids"
    pos = out.get(TEXT_PREFIX + "embeddings.position_embedding.weight")
    if ids not in out and pos is not None:
        # Real SD1.5 files carry this int64 buffer (non-persistent in current transformers);
        # ComfyUI's SD15 `process_clip_state_dict` and A1111 accept it, diffusers ignores it.
        out[ids] = torch.arange(pos.shape[0], dtype=torch.int64, device=pos.device)[None]
    return out


def check_exportable(unet_config: Mapping, text_encoder_config) -> None:
    """Refuse models whose single-file layout this module doesn't write: SD2 (OpenCLIP-H under
    `cond_stage_model.model`, whose last layer diffusers drops, so a faithful file can't be
    rebuilt). SD1.x and SDXL pass."""
    if unet_config.get("addition_embed_type") == "text_time":
        return  # SDXL
    if unet_config.get("use_linear_projection") or \
            getattr(text_encoder_config, "hidden_act", "quick_gelu") != "quick_gelu" or \
            unet_config["cross_attention_dim"] != text_encoder_config.hidden_size:
        raise ValueError("single-file export supports Stable Diffusion 1.x and SDXL (this looks "
                         "like SD2: OpenCLIP text encoder); use the diffusers folder format")


def text_encoder_to_open_clip(state_dict: Mapping[str, torch.Tensor], prefix: str
                              ) -> dict[str, torch.Tensor]:
    """HF CLIP(WithProjection) -> OpenCLIP names under `prefix`: q/k/v fused into in_proj,
    ln_1/ln_2, mlp.c_fc/c_proj, positional_embedding, and the projection transposed (OpenCLIP
    computes x @ text_projection; diffusers' reader transposes it back)."""
    sd = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    hidden = sd["embeddings.token_embedding.weight"].shape[1]
    proj = sd.get("text_projection.weight")
    out = {prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["final_layer_norm.bias"],
           prefix + "text_projection": proj.T.contiguous() if proj is not None
           else torch.eye(hidden, dtype=sd["final_layer_norm.weight"].dtype)}
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for old, new in OPEN_CLIP_LAYER.items():
                out[f"{dst}{new}.{kind}"] = sd[f"{src}{old}.{kind}"]
    return out


def unet_to_sgm(state_dict: Mapping[str, torch.Tensor], config: Mapping
                ) -> dict[str, torch.Tensor]:
    """SDXL UNet -> SGM: the LDM block map plus `label_emb` (the pooled-text + size embedding,
    diffusers' add_embedding: linear_1 -> label_emb.0.0, linear_2 -> label_emb.0.2)."""
    sd = dict(state_dict)
    extra = {f"{UNET_PREFIX}label_emb.0.{i}.{kind}": sd.pop(f"add_embedding.linear_{j}.{kind}")
             for i, j in ((0, 1), (2, 2)) for kind in ("weight", "bias")}
    return {**unet_to_ldm(sd, {**config, "addition_embed_type": None}), **extra}


def to_sgm(unet_sd: Mapping[str, torch.Tensor], unet_config: Mapping,
           vae_sd: Mapping[str, torch.Tensor], vae_config: Mapping,
           text_encoder_sd: Mapping[str, torch.Tensor],
           text_encoder_2_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One SDXL checkpoint dict from the four component dicts."""
    first = {XL_TEXT_PREFIX + k.removeprefix(TEXT_PREFIX): v
             for k, v in text_encoder_to_ldm(text_encoder_sd).items()}
    return {**unet_to_sgm(unet_sd, unet_config), **vae_to_ldm(vae_sd, vae_config), **first,
            **text_encoder_to_open_clip(text_encoder_2_sd, XL_OPEN_CLIP_PREFIX)}


def to_ldm(unet_sd: Mapping[str, torch.Tensor], unet_config: Mapping,
           vae_sd: Mapping[str, torch.Tensor], vae_config: Mapping,
           text_encoder_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One LDM checkpoint dict (tensors shared, not copied) from the three component dicts."""
    return {**unet_to_ldm(unet_sd, unet_config), **vae_to_ldm(vae_sd, vae_config),
            **text_encoder_to_ldm(text_encoder_sd)}
