"""kohya names and shapes for the full-size SD1.5 and SDXL architectures, every target preset.

Built from the shipped configs (assets/configs) on the meta device: no weights, no download; only
the LoRA matrices get (uninitialised) storage so the real exporter can run (issue 6, lora-formats.md
§1: SD1.5 keeps diffusers paths and `lora_te_`; SDXL uses SGM blocks and `lora_te1_`/`lora_te2_`).
"""

from __future__ import annotations

import pytest
import torch

from studio.base_model.detect import detect
from studio.base_model.configs import ASSETS_CONFIGS as CONFIGS

torch.set_num_threads(1)


def export_random_sdxl_lora(unet, encoders, out, **settings):
    """A full-attention+FF LoRA on an SDXL UNet and both text encoders with random (seed 5) up
    weights, exported as a kohya file: a LoRA that visibly changes the model."""
    import torch

    from studio.config import SaveDtype, TargetPreset
    from training.export import export_adapter
    from training.metadata import TrainingFacts

    cfg = lora_wrapped(unet, encoders, TargetPreset.attention_ff, rank=4, materialize=False,
                       save_dtype=SaveDtype.fp32, **settings)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for model in (unet, *encoders):
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    facts = TrainingFacts(base_model_name="tiny", base_model_version="sdxl_base_v1-0",
                          prediction_type="epsilon", num_images=1, steps=1, epochs=1,
                          max_steps=1, tag_frequency={}, dataset_name="d",
                          training_started_at=0.0, session_id=1)
    return export_adapter(unet, cfg, facts, out, encoders)


def lora_wrapped(unet, encoders, preset, rank, materialize=True, **settings):
    """Add kohya-target LoRAs (UNet by preset, text encoders q/k/v/out_proj/fc1/fc2); on the meta
    device, give only the LoRA weights real (uninitialised) storage so they can be exported."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

    from studio.config import TrainConfig, unet_targets
    from training.export import KOHYA_TE_TARGETS

    cfg = TrainConfig(rank=rank, alpha=float(rank), target_preset=preset, resolution=64,
                      output_name="names", **settings)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(unet_targets(cfg))))
    for te in encoders:
        te.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(KOHYA_TE_TARGETS)))
    for model in (unet, *encoders):
        for layer in (m for m in model.modules() if isinstance(m, LoraLayer)):
            if materialize:
                layer.lora_A.to_empty(device="cpu")
                layer.lora_B.to_empty(device="cpu")
    return cfg


def full_size(name: str):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS / name
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        encoders = [CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))]
        if (folder / "text_encoder_2").is_dir():
            encoders.append(CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder / "text_encoder_2")))
    return unet, encoders


# (UNet modules attention-only, attention+ff+proj = kohya's default; per-encoder modules):
# lora-formats.md §1: SD1.5 16 transformers × 8 / × 12; SDXL 70 blocks × 8, 70 × 10 + 11 × 2;
# text encoders 6 per layer (12 layers; SDXL 12 + 32).
COUNTS = {"sd15": ((128, 192), (72,)), "sdxl-base": ((560, 722), (72, 192))}
SAMPLES = {  # kohya name -> (lora_down shape, lora_up shape) at rank 4
    "sd15": {
        "lora_unet_down_blocks_0_attentions_0_proj_in": ((4, 320, 1, 1), (320, 4, 1, 1)),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": ((4, 768),
                                                                                 (320, 4)),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj": ((4, 320),
                                                                                    (2560, 4)),
        "lora_unet_mid_block_attentions_0_proj_out": ((4, 1280, 1, 1), (1280, 4, 1, 1)),
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn1_to_out_0": ((4, 320),
                                                                                   (320, 4)),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": ((4, 768), (768, 4)),
        "lora_te_text_model_encoder_layers_11_mlp_fc1": ((4, 768), (3072, 4))},
    "sdxl-base": {
        "lora_unet_input_blocks_4_1_proj_in": ((4, 640), (640, 4)),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": ((4, 640), (640, 4)),
        "lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_k": ((4, 2048), (1280, 4)),
        "lora_unet_middle_block_1_transformer_blocks_0_ff_net_0_proj": ((4, 1280), (10240, 4)),
        "lora_unet_output_blocks_0_1_transformer_blocks_9_ff_net_2": ((4, 5120), (1280, 4)),
        "lora_unet_output_blocks_5_1_transformer_blocks_1_attn2_to_v": ((4, 2048), (640, 4)),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": ((4, 768), (768, 4)),
        "lora_te2_text_model_encoder_layers_31_mlp_fc2": ((4, 5120), (1280, 4))},
}
VERSION = {"sd15": "sd_v1", "sdxl-base": "sdxl_base_v1-0"}


@pytest.mark.parametrize("name", ["sd15", "sdxl-base"])
def test_full_size_kohya_names_and_shapes(name):
    from studio.config import TargetPreset
    from training.export import kohya_tensors

    for preset, n_unet in zip((TargetPreset.attention, TargetPreset.attention_ff),
                              COUNTS[name][0]):
        unet, encoders = full_size(name)
        cfg = lora_wrapped(unet, encoders, preset, rank=4)
        tensors = kohya_tensors(unet, cfg, VERSION[name], encoders)
        modules = {k.rsplit(".", 1 if k.endswith(".alpha") else 2)[0] for k in tensors}
        prefixes = ["lora_te_"] if name == "sd15" else ["lora_te1_", "lora_te2_"]
        assert len([m for m in modules if m.startswith("lora_unet_")]) == n_unet
        assert [len([m for m in modules if m.startswith(p)]) for p in prefixes] == \
            list(COUNTS[name][1])
        assert len(tensors) == 3 * len(modules)
        for module, (down, up) in SAMPLES[name].items():
            if preset == TargetPreset.attention and ("proj_" in module or "ff_net" in module
                                                     or "mlp" in module):
                assert not module.startswith("lora_unet") or module not in modules
                continue
            assert tuple(tensors[f"{module}.lora_down.weight"].shape) == down, module
            assert tuple(tensors[f"{module}.lora_up.weight"].shape) == up, module
        if name == "sdxl-base":  # SGM blocks with attention: input 4,5,7,8; middle; output 0-5
            blocks = {"_".join(m.split("_")[2:5]) for m in modules if m.startswith("lora_unet")}
            assert blocks == {f"input_blocks_{i}" for i in (4, 5, 7, 8)} | {"middle_block_1"} | \
                {f"output_blocks_{i}" for i in range(6)}
            assert not any("down_blocks" in m or "text_model_text_model" in m for m in modules)


@pytest.mark.parametrize("name, arch, diffusers_type", [
    ("sd15", "sd1", "v1"), ("sd2-v", "sd2", "v2"), ("sdxl-base", "sdxl", "xl_base")])
def test_full_size_single_file_layouts_are_detected(name, arch, diffusers_type, tmp_path):
    """The single-file key layout of each full-size architecture (from the shipped configs and
    training/ldm_convert.py, which merge writes with) is what diffusers expects and what
    detection recognises."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    from test_base_model_detect import write
    from training.ldm_convert import (text_encoder_to_ldm, text_encoder_to_open_clip, to_sgm,
                                      unet_to_ldm, vae_to_ldm)

    unet, encoders = full_size(name)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / name / "vae"))
    keys = vae_to_ldm(vae.state_dict(), vae.config)
    if arch == "sdxl":
        keys = to_sgm(unet.state_dict(), unet.config, vae.state_dict(), vae.config,
                      encoders[0].state_dict(), encoders[1].state_dict())
    else:
        keys.update(unet_to_ldm(unet.state_dict(), unet.config))
        keys.update(text_encoder_to_ldm(encoders[0].state_dict()) if arch == "sd1" else
                    text_encoder_to_open_clip(encoders[0].state_dict(), "cond_stage_model.model."))
    assert infer_diffusers_model_type(keys) == diffusers_type
    path = write(tmp_path / f"{name}.safetensors",  # sparse: header + zeros, GBs for free
                 {k: ("F16" if v.is_floating_point() else "I64", list(v.shape))
                  for k, v in keys.items()})
    found = detect(path)
    assert (found.architecture, found.has_vae) == (arch, True)
    assert found.cross_attention_dim == unet.config.cross_attention_dim



@pytest.mark.parametrize("version, prediction, base_version, architecture, v2", [
    ("sd_v1", "epsilon", "sd_v1", "stable-diffusion-v1/lora", "False"),
    ("sd_v2", "epsilon", "sd_v2", "stable-diffusion-v2-512/lora", "True"),
    ("sd_v2", "v_prediction", "sd_v2_v", "stable-diffusion-v2-768-v/lora", "True"),
    ("sdxl_base_v1-0", "epsilon", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora",
     "False")])
def test_architecture_metadata(version, prediction, base_version, architecture, v2):
    """What A1111/Forge classify LoRAs by (lora-formats.md §7.1, §7.4) for each base."""
    from studio.config import TrainConfig
    from training.metadata import TrainingFacts, build_metadata

    facts = TrainingFacts(base_model_name="m", base_model_version=version,
                          prediction_type=prediction, num_images=1, steps=1, epochs=1,
                          max_steps=1, tag_frequency={}, dataset_name="d",
                          training_started_at=0.0, session_id=1)
    meta = build_metadata(TrainConfig(), facts)
    assert (meta["ss_base_model_version"], meta["modelspec.architecture"], meta["ss_v2"]) == \
        (base_version, architecture, v2)
