"""SDXL and text-encoder LoRAs train end to end, and their files reload exactly (issue 6)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_project, run_cli
from studio import dataset
from studio.runs.project import Project
from studio.safetensors_header import read_header

pytestmark = pytest.mark.slow


def test_tiny_sdxl_trains_through_the_cli_with_samples(tmp_path, tiny_sdxl):
    project = make_project(tmp_path / "p", tiny_sdxl, max_steps=3, sample_every_n_epochs=1)
    run = run_cli("train", str(project))
    assert run.returncode == 0, run.stderr[-3000:]
    done = run.of("done")[0]
    tensors, meta = read_header(done["path"])
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)  # SGM names
    assert run.of("sample") and all(p.endswith(".png") for p in run.of("sample")[0]["paths"])


@pytest.mark.parametrize("model", ["tiny_model", "tiny_sdxl"])
def test_text_encoder_lora_trains_and_reloads_equal(request, tmp_path, model):
    from diffusers import DiffusionPipeline

    from training.events import Control, EventSink
    from training.train import train

    torch.set_num_threads(1)
    folder = request.getfixturevalue(model)
    project = Project(make_project(tmp_path / "p", folder, max_steps=4, save_dtype="fp32",
                                   train_text_encoder=True, text_encoder_lr=1e-2,
                                   learning_rate=1e-2, sample_every_n_epochs=0))
    cfg = project.load_config()
    items = dataset.load(project.resolve(cfg.dataset_dir), cfg.exclude_images, cfg.repeats)
    result = train(project, cfg, project.new_run(), items,
                   EventSink(claim_stdout=False, stdout_events=False), Control(signals=False))
    tensors, _ = read_header(result.adapter)
    te_prefix = "lora_te1_" if model == "tiny_sdxl" else "lora_te_text_model_"
    assert any(k.startswith(te_prefix) for k in tensors)

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    ids = pipe.tokenizer(["zxq, a red circle"], padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    trained_te = result.text_encoders[0].eval()
    with torch.no_grad():
        before = pipe.text_encoder(ids)[0]
        expected = trained_te(ids)[0]
        pipe.load_lora_weights(str(result.adapter.parent), weight_name=result.adapter.name)
        after = pipe.text_encoder(ids)[0]
        assert (expected - before).abs().max() > 1e-3  # training moved the text encoder...
        assert (after - expected).abs().max() <= 1e-4  # ...and the file carries exactly that
        size = pipe.unet.config.sample_size
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(1, 4, size, size, generator=g), torch.tensor([500]),
             torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=g))
        extra = {}
        if model == "tiny_sdxl":
            extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=g),
                                           "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]])}}
        result.unet.eval()
        assert (pipe.unet(*x, **extra).sample - result.unet(*x, **extra).sample
                ).abs().max() <= 1e-4
    assert result.step == 4
