"""studio/estimate.py and studio/base_model/ against the real thing: PEFT on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio import estimate
from studio.base_model import inspect as model_info
from studio.base_model import layers
from studio.dataset import plan
from studio.config import TargetPreset, TrainConfig, unet_targets
from studio.dataset import Item
from uifixtures import *  # noqa: F403 (pytest fixtures)

PRESETS = [dict(target_preset=TargetPreset.attention),
           dict(target_preset=TargetPreset.attention_ff),
           dict(target_preset=TargetPreset.custom, target_modules=("to_q", "to_v"))]


@pytest.mark.parametrize("targets", PRESETS)
@pytest.mark.parametrize("rank", [1, 4, 32])
def test_parameter_count_matches_peft(tiny_model, rank, targets):
    import torch
    from diffusers import UNet2DConditionModel

    from training import models

    cfg = TrainConfig(rank=rank, **targets)
    info = model_info.inspect(str(tiny_model))
    assert info.ok and info.exact, info.problem  # read from the weights file's header
    unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet")
    torch.set_num_threads(1)
    params = models.add_lora(unet, cfg)
    expected = sum(p.numel() for p in params)
    est = estimate.estimate(info, cfg)
    assert est.params == expected
    assert est.unet_params == sum(p.numel() for n, p in unet.named_parameters()
                                  if "lora_" not in n)
    # The config-only fallback (no weights file readable) gives the same count.
    config = json.loads((tiny_model / "unet" / "config.json").read_text())
    fallback = estimate.lora_params(
        estimate.targeted(layers.config_layers(config), unet_targets(cfg)), rank)
    assert fallback == expected


def test_sd15_numbers_from_the_config_alone(sd15):
    info = model_info.inspect(str(sd15))
    assert info.architecture == "SD 1.x" and info.ok and not info.exact
    est = estimate.estimate(info, TrainConfig(rank=4))
    assert est.params == 797_184  # the well-known size of an SD1.5 attention LoRA at rank 4
    bigger = estimate.estimate(info, TrainConfig(rank=32))
    assert bigger.params == 8 * est.params and bigger.file_bytes > 7 * est.file_bytes
    # CLIP ViT-L text encoder LoRA at rank 4, kohya's set (q, k, v, out, fc1, fc2 x 12 layers).
    with_te = estimate.estimate(info, TrainConfig(rank=4, train_text_encoder=True))
    assert with_te.params - est.params == 12 * 4 * (4 * 2 * 768 + 2 * (768 + 3072))


SIZES = [(768, 768), (640, 896), (896, 640), (1024, 768), (600, 900), (320, 320)] * 5


@pytest.mark.parametrize("cfg", [
    TrainConfig(), TrainConfig(batch_size=4, epochs=3), TrainConfig(max_steps=500),
    TrainConfig(batch_size=3, gradient_accumulation_steps=4, repeats=3),
    TrainConfig(enable_buckets=False, batch_size=2), TrainConfig(validation_images=0),
    TrainConfig(resolution=768, bucket_step=32, batch_size=2, validation_images=5)])
@pytest.mark.parametrize("n", [1, 7, 30])
def test_plan_steps_matches_the_engine(cfg, n):
    """The Train tab's step count is the worker's: its validation split (training/data.py),
    then studio/dataset/plan.py on the training images' buckets and each image's own repeats
    (kohya subfolders differ from the top folder's `repeats`, so uniform repeats can't hide a
    mismatch)."""
    from training import data

    sizes = SIZES[:n]
    per_folder = [cfg.repeats, 10, 3]  # top folder, 10_x/, 3_y/
    items = [Item(Path(f"{i:03d}.png"), "", None, "", size, per_folder[i % 3], f"{i:03d}.png")
             for i, size in enumerate(sizes)]
    train, _ = data.split_validation(items, cfg)
    expected = plan.steps(plan.bucket_sizes([it.size for it in train], cfg),
                          [it.repeats for it in train], cfg)
    assert estimate.plan_steps(cfg, items) == expected
    if n == 30 and not cfg.max_steps:  # the repeats really count
        uniform = [Item(it.image, "", None, "", it.size, 1, it.name) for it in items]
        assert estimate.plan_steps(cfg, uniform)[1] < expected[1]


def test_models_that_cannot_be_trained_say_why(tmp_path):
    assert "No base model" in model_info.inspect("").problem
    assert "not found" in model_info.inspect(str(tmp_path / "nope")).problem
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"x")
    assert "arbitrary code" in model_info.inspect(str(pickle)).problem
    assert "Hugging Face cache" in model_info.inspect("org/not-downloaded").problem
    (tmp_path / "xl" / "unet").mkdir(parents=True)
    (tmp_path / "xl" / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    (tmp_path / "xl" / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": 2048}))
    (tmp_path / "xl" / "unet" / "config.json").write_text(json.dumps(
        {"cross_attention_dim": 2048, "addition_embed_type": "text_time", "sample_size": 128}))
    for sub, width in (("text_encoder", 768), ("text_encoder_2", 1280)):
        (tmp_path / "xl" / sub).mkdir()
        (tmp_path / "xl" / sub / "config.json").write_text(json.dumps({"hidden_size": width}))
    xl = model_info.inspect(str(tmp_path / "xl"))
    assert xl.architecture == "SDXL" and xl.ok, xl.problem  # SDXL folders train (issue 12)
    # A folder whose parts don't fit is refused with the worker's own words.
    (tmp_path / "xl" / "text_encoder_2" / "config.json").write_text('{"hidden_size": 1024}')
    assert "belong to different models" in model_info.inspect(str(tmp_path / "xl")).problem
