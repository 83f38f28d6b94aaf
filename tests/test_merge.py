"""Merge ("bake in"): LDM single file and diffusers folder equal base + LoRA at that strength."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from conftest import load_pipe, unet_with_random_lora

torch.set_num_threads(1)  # conftest also sets HF_HUB_OFFLINE=1 before diffusers is imported

STRENGTH = 0.7
RANK, ALPHA = 4, 2.0  # alpha != rank, so a merge that ignored alpha/r would show


@pytest.fixture(scope="module")
def gen(tiny_model):
    from training.generate import Generator

    return Generator.load(str(tiny_model), device="cpu")


@pytest.fixture(scope="module")
def te_lora(tiny_model, tmp_path_factory, gen) -> Path:
    """A kohya file with UNet *and* text-encoder modules (alpha/r = 0.5), like sd-scripts writes."""
    from peft import get_peft_model_state_dict

    from studio.config import TrainConfig
    from training.export import kohya_state_dict

    cfg = TrainConfig(rank=RANK, alpha=ALPHA, resolution=64)
    unet = unet_with_random_lora(tiny_model, RANK, ALPHA, cfg.target_modules, seed=5)
    tensors = kohya_state_dict(get_peft_model_state_dict(unet), ALPHA, dtype=torch.float32)
    g = torch.Generator().manual_seed(6)
    for name, module in gen.pipe.text_encoder.named_modules():
        if name.endswith(("_proj", "fc1", "fc2")) and isinstance(module, torch.nn.Linear):
            # transformers >= 5.6 drops `text_model.` from the module path; kohya names keep it.
            key = "lora_te_text_model_" + name.replace(".", "_")
            out_f, in_f = module.weight.shape
            tensors[f"{key}.lora_down.weight"] = torch.randn(RANK, in_f, generator=g) * 0.3
            tensors[f"{key}.lora_up.weight"] = torch.randn(out_f, RANK, generator=g) * 0.3
            tensors[f"{key}.alpha"] = torch.tensor(ALPHA)
    path = tmp_path_factory.mktemp("te-lora") / "style-te.safetensors"
    safetensors.torch.save_file(tensors, str(path))
    return path


def render(pipe, latent: bool = False):
    out = pipe("zxq, a red circle", num_inference_steps=4, guidance_scale=5.0, width=64,
               height=64, generator=torch.Generator("cpu").manual_seed(3),
               output_type="latent" if latent else "np").images
    return out if latent else np.asarray(out)


def from_single_file(path: Path, config: Path):
    from diffusers import StableDiffusionPipeline

    # lora-formats.md §8.2: offline only with config=<local folder> and no safety checker.
    pipe = StableDiffusionPipeline.from_single_file(
        str(path), config=str(config), local_files_only=True, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_same_weights(pipe, ref, dtype=torch.float32):
    for part in ("unet", "vae", "text_encoder"):
        got, want = getattr(pipe, part).state_dict(), getattr(ref, part).state_dict()
        assert set(got) == set(want), part
        for key, value in want.items():
            assert torch.equal(got[key], value.to(dtype).float()), f"{part}.{key}"


def test_single_file_round_trip_is_exact(gen, tiny_model, tmp_path):
    from studio.safetensors_header import data_section_sha256, read_header
    from training.merge import merge

    out = merge(gen, [], tmp_path / "base.safetensors", "safetensors", precision="fp32")
    assert_same_weights(from_single_file(out, tiny_model), gen.pipe)  # every tensor, bit-exact
    half = merge(gen, [], tmp_path / "half.safetensors")  # fp16 is the default
    assert_same_weights(from_single_file(half, tiny_model), gen.pipe, torch.float16)
    header, meta = read_header(half)
    assert {k.split(".")[0] for k in header} == {"model", "first_stage_model",
                                                 "cond_stage_model"}
    assert header["model.diffusion_model.input_blocks.0.0.weight"]["dtype"] == "F16"
    assert meta["modelspec.sai_model_spec"] == "1.0.1"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert meta["modelspec.hash_sha256"] == "0x" + data_section_sha256(half)
    assert stat.S_IMODE(half.stat().st_mode) == 0o644


def test_merged_model_draws_base_plus_lora(gen, tiny_model, te_lora, lora_files, tmp_path):
    from studio.safetensors_header import read_header
    from training.merge import merge

    gen.set_adapters([])
    base = render(gen.pipe)
    gen.set_adapters([(te_lora, 1.0)])
    full = render(gen.pipe)
    gen.set_adapters([(te_lora, STRENGTH)])
    want, want_latent = render(gen.pipe), render(gen.pipe, latent=True)
    gen.set_adapters([])

    single = merge(gen, [(te_lora, STRENGTH)], tmp_path / "merged.safetensors")
    folder = merge(gen, [(te_lora, STRENGTH)], tmp_path / "merged", "diffusers",
                   precision="fp32")
    exact = merge(gen, [(te_lora, STRENGTH)], tmp_path / "merged32.safetensors",
                  precision="fp32")
    assert "style-te at strength 0.7" in read_header(single)[1]["modelspec.description"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]} == \
        {0o755, 0o644}  # readable by a ComfyUI/A1111 running as another user

    # The baked weights are W + strength·(alpha/r)·up@down for every module of the file.
    merged, base_pipe = load_pipe(folder), load_pipe(tiny_model)
    merged.set_progress_bar_config(disable=True)
    lora = safetensors.torch.load_file(str(te_lora))
    checked = 0
    for part, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_text_model_")):
        for name, module in getattr(merged, part).named_modules():
            key = prefix + name.replace(".", "_")
            if f"{key}.lora_down.weight" not in lora:
                continue
            up, down = lora[f"{key}.lora_up.weight"], lora[f"{key}.lora_down.weight"]
            delta = (up.flatten(1) @ down.flatten(1)).reshape(module.weight.shape)
            w0 = getattr(base_pipe, part).get_submodule(name).weight
            torch.testing.assert_close(module.weight, w0 + STRENGTH * ALPHA / RANK * delta,
                                       rtol=0, atol=1e-6)
            checked += 1
    assert checked > 30, checked  # both UNet and text-encoder modules were found

    for pipe, fp16 in ((from_single_file(single, tiny_model), True),
                       (from_single_file(exact, tiny_model), False), (merged, False)):
        image = render(pipe)
        if fp16:
            assert np.abs(image - want).max() <= 2 / 255
        else:
            assert (render(pipe, latent=True) - want_latent).abs().max() <= 1e-4
        # Clearly not strength 1.0 (or alpha ignored: 1.4) and clearly not the base model.
        assert np.abs(image - full).max() > 10 / 255
        assert np.abs(image - base).max() > 10 / 255

    # Several LoRAs at once (one with alpha == rank).
    pair = [(lora_files[0], 0.5), (te_lora, -0.4)]
    gen.set_adapters(pair)
    want_pair = render(gen.pipe, latent=True)
    gen.set_adapters([])
    both = merge(gen, pair, tmp_path / "both.safetensors", precision="fp32")
    assert (render(from_single_file(both, tiny_model), latent=True)
            - want_pair).abs().max() <= 1e-4


def test_generator_is_unchanged_after_a_merge(gen, te_lora, lora_files, tmp_path):
    from training.merge import merge

    gen.set_adapters([(lora_files[1], 0.3)])
    before_lora = render(gen.pipe)
    gen.set_adapters([])
    before = render(gen.pipe)
    gen.set_adapters([(lora_files[1], 0.3)])
    merge(gen, [(te_lora, STRENGTH)], tmp_path / "m.safetensors")
    merge(gen, [(te_lora, STRENGTH)], tmp_path / "m", "diffusers")
    merge(gen, [(te_lora, 1.0)], tmp_path / "m", "diffusers")  # replaces the earlier folder
    assert [(a.path, w) for a, w in gen.active] == [(lora_files[1].resolve(), 0.3)]
    assert np.array_equal(render(gen.pipe), before_lora)
    gen.set_adapters([])
    assert np.array_equal(render(gen.pipe), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.safetensors"]


def test_refuses_to_overwrite_the_base_model_or_a_lora(gen, tiny_model, te_lora):
    from training.merge import merge

    before = sorted(str(p) for p in tiny_model.rglob("*"))
    for out, fmt in ((tiny_model, "diffusers"), (tiny_model / "unet", "diffusers"),
                     (tiny_model / "unet" / "diffusion_pytorch_model.safetensors", "safetensors"),
                     (tiny_model.parent, "diffusers"), (te_lora, "safetensors")):
        with pytest.raises(ValueError):
            merge(gen, [(te_lora, 1.0)], out, fmt)
    assert sorted(str(p) for p in tiny_model.rglob("*")) == before


def test_full_size_sd15_layout():
    """Real SD1.5 architecture (shapes only, on the meta device): the keys A1111/ComfyUI expect."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)
    from transformers import CLIPTextConfig, CLIPTextModel

    from training import ldm_convert

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            cross_attention_dim=768, attention_head_dim=8, sample_size=64,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072,
                                          num_hidden_layers=12, num_attention_heads=12,
                                          vocab_size=49408, max_position_embeddings=77))
    ldm_convert.check_exportable(unet.config, te.config)
    sd = ldm_convert.to_ldm(unet.state_dict(), unet.config, vae.state_dict(), vae.config,
                            te.state_dict())
    counts = {p: sum(k.startswith(p) for k in sd) for p in ("model.diffusion_model.",
                                                           "first_stage_model.",
                                                           "cond_stage_model.transformer.")}
    # v1-5-pruned-emaonly.safetensors: 686 UNet, 248 VAE, 197 CLIP tensors (1131 in all).
    assert counts == {"model.diffusion_model.": 686, "first_stage_model.": 248,
                      "cond_stage_model.transformer.": 197} and len(sd) == 1131
    shapes = {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.11.0.out_layers.3.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight":
            (1280, 768),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight":
            (2560, 320),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "first_stage_model.encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
        "first_stage_model.decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.encoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": (1, 77),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    # diffusers' own reader (the reverse direction) gets every original name and shape back.
    for model, convert in ((unet, convert_ldm_unet_checkpoint), (vae, convert_ldm_vae_checkpoint)):
        back = convert(sd, model.config)
        assert {k: v.shape for k, v in back.items()} == \
            {k: v.shape for k, v in model.state_dict().items()}
