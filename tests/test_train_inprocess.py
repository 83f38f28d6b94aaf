"""LoRA invariants checked on the trained UNet itself: frozen base, step-0 identity, exact reload."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from studio import dataset
from studio.runs.project import Project
from training import models
from training.events import Control, EventSink
from training.train import train

from conftest import make_project

pytestmark = pytest.mark.slow


def unet_inputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    return (torch.randn(2, 4, size, size, generator=g), torch.tensor([10, 700]),
            torch.randn(2, 77, unet.config.cross_attention_dim, generator=g))


@pytest.fixture
def trained(tmp_path, tiny_model):
    torch.set_num_threads(1)
    project = Project(make_project(tmp_path / "p", tiny_model, max_steps=6,
                                   save_dtype="fp32", learning_rate=1e-2))
    cfg = project.load_config()
    sink = EventSink(claim_stdout=False, stdout_events=False)
    items = dataset.load(project.resolve(cfg.dataset_dir), cfg.exclude_images, cfg.repeats)
    result = train(project, cfg, project.new_run(), items, sink, Control(signals=False))
    return project, cfg, result


def test_base_weights_are_frozen_and_bit_identical(trained):
    project, cfg, result = trained
    fresh = models.load_base(cfg, project.root).unet.state_dict()
    trained_sd = result.unet.state_dict()
    base_keys = [k for k in trained_sd if "lora_" not in k]
    assert len(base_keys) == len(fresh)
    for key in base_keys:
        assert torch.equal(trained_sd[key], fresh[key.replace(".base_layer", "")]), key
    assert all(not p.requires_grad for n, p in result.unet.named_parameters() if "lora_" not in n)


def test_reloaded_file_reproduces_the_trained_unet(trained):
    from diffusers import StableDiffusionPipeline

    project, cfg, result = trained
    pipe = StableDiffusionPipeline.from_pretrained(
        models.resolve_folder(cfg.base_model, project.root)[0], safety_checker=None,
        feature_extractor=None, requires_safety_checker=False, local_files_only=True)
    x = unet_inputs(pipe.unet)
    with torch.no_grad():
        base_out = pipe.unet(*x).sample
        pipe.load_lora_weights(str(result.adapter.parent), weight_name=result.adapter.name)
        reloaded = pipe.unet(*x).sample
        result.unet.eval()
        expected = result.unet(*x).sample
    assert (expected - base_out).abs().max() > 1e-3  # training changed something...
    assert (reloaded - expected).abs().max() <= 1e-4  # ...and the file carries exactly that


def test_step_zero_is_exactly_the_base_model(tiny_model, tmp_path):
    from diffusers import UNet2DConditionModel

    from studio.config import TrainConfig

    unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet")
    x = unet_inputs(unet)
    with torch.no_grad():
        before = unet(*x).sample
        params = models.add_lora(unet, dataclasses.replace(TrainConfig(), rank=8, alpha=4.0))
        after = unet(*x).sample
    assert params and all(p.dtype == torch.float32 for p in params)
    assert torch.equal(before, after)
    lora_b = [p for n, p in unet.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
