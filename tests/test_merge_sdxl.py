"""Bake-in on SDXL: a single-file and a folder base each merge into a file and a folder that
compute base + LoRA (UNet and both text encoders); v-prediction markers survive the merge."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from studio.base_model import configs
from studio.base_model.detect import detect

torch.set_num_threads(1)
STRENGTH = 0.7


@pytest.fixture(scope="module")
def xl_configs(tmp_path_factory):
    """Tiny SDXL single files (plain and NoobAI-style v-pred) with their config folders, which
    the loaders find through LORA_STUDIO_MODEL_CONFIGS as they would assets/configs."""
    from training import tiny_model

    root = tmp_path_factory.mktemp("xl-configs")
    plain = tiny_model.build_single_file(root / "xl.safetensors", "sdxl", root / "configs")
    vpred = tiny_model.build_single_file(root / "xl-vpred.safetensors", "sdxl", root / "configs",
                                         extra_keys=("v_pred", "ztsnr"))
    old = os.environ.get(configs.CONFIGS_ENV)
    os.environ[configs.CONFIGS_ENV] = str(root / "configs")
    yield plain, vpred
    if old is None:
        os.environ.pop(configs.CONFIGS_ENV)
    else:
        os.environ[configs.CONFIGS_ENV] = old


def random_lora(base_model: str, out: Path) -> Path:
    """A kohya SDXL LoRA on the UNet and both text encoders, with random (trained-like) B."""
    from studio.config import TrainConfig
    from test_kohya_names import export_random_sdxl_lora
    from training.models import load_base

    base = load_base(TrainConfig(base_model=base_model), Path.cwd())
    return export_random_sdxl_lora(base.unet, base.text_encoders, out)[0]


def outputs(unet, encoders, tokenizer):
    g = torch.Generator().manual_seed(3)
    args = [torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500]),
            torch.randn(1, 7, unet.config.cross_attention_dim, generator=g)]
    cond = {"text_embeds": torch.randn(1, 32, generator=g),
            "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]])}
    ids = tokenizer(["zxq, a red circle"], return_tensors="pt").input_ids
    with torch.no_grad():
        return [unet(*args, added_cond_kwargs=cond).sample] + [te(ids)[0] for te in encoders]


def assert_close(got, want):
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() <= 1e-4


@pytest.mark.parametrize("kind", ["single_file", "folder"])
def test_sdxl_merges_into_a_file_and_a_folder_equal_to_base_plus_lora(kind, xl_configs,
                                                                        tiny_sdxl, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from training import single_file
    from training.generate import Generator
    from training.merge import merge

    base = str(xl_configs[0] if kind == "single_file" else tiny_sdxl)
    lora = random_lora(base, tmp_path / "style.safetensors")
    gen = Generator.load(base, device="cpu")
    gen.set_adapters([(lora, STRENGTH)])
    pipe = gen.pipe
    want = outputs(pipe.unet, (pipe.text_encoder, pipe.text_encoder_2), pipe.tokenizer)
    gen.set_adapters([])
    assert (outputs(pipe.unet, (pipe.text_encoder,), pipe.tokenizer)[0] - want[0]).abs().max() \
        > 1e-3  # the LoRA changes the output, so equality below means it was merged

    folder = merge(gen, [(lora, STRENGTH)], tmp_path / "merged", "diffusers", "fp32")
    merged = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)
    assert_close(outputs(merged.unet, (merged.text_encoder, merged.text_encoder_2),
                         merged.tokenizer), want)

    file = merge(gen, [(lora, STRENGTH)], tmp_path / "merged.safetensors", "safetensors", "fp32")
    found = detect(file)
    assert (found.architecture, found.has_vae, found.prediction_type) == \
        ("sdxl", True, "epsilon")
    if kind == "single_file":  # the tiny folder's two encoders share a width: no file reader
        loaded = single_file.load(file, cache_root=tmp_path / "c")  # tells those apart
        assert_close(outputs(loaded.unet, (loaded.text_encoder, loaded.text_encoder_2),
                             loaded.tokenizer), want)


def test_v_prediction_markers_survive_the_merge(xl_configs, tmp_path):
    from training.generate import Generator
    from training.merge import merge

    vpred = xl_configs[1]
    assert detect(vpred).prediction_type == "v_prediction"
    gen = Generator.load(str(vpred), device="cpu")
    out = merge(gen, [], tmp_path / "baked.safetensors", "safetensors", "fp16")
    found = detect(out)
    assert (found.prediction_type, found.prediction_source, found.zero_terminal_snr) == \
        ("v_prediction", "marker", True)
