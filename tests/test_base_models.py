"""Single-file SD1.x / SD2.x / SDXL checkpoints load offline; an SDXL LoRA export reloads.

The checkpoints are tiny models written with the real single-file key layout (LDM for SD1/SD2,
SGM + OpenCLIP for SDXL: lora-formats.md §8.5), built from tiny pipelines (machine-notes.md §2),
and loaded through config folders that mirror the shipped ones in assets/configs (shipped
scheduler, model_index and tokenizer configs; tiny sizes). Issue 6.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from safetensors.torch import save_file  # noqa: E402

from studio.base_model import configs  # noqa: E402
from training import single_file  # noqa: E402

from test_kohya_names import export_random_sdxl_lora  # noqa: E402
from training import tiny_model  # noqa: E402

CONFIGS = configs.ASSETS_CONFIGS


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{arch: (single file, tiny config folder, UNet, text encoders)} for sd1, sd2, sdxl."""
    out = tmp_path_factory.mktemp("single-file")
    found = {}
    for seed, arch in enumerate(("sd1", "sd2", "sdxl")):
        parts = tiny_model.single_file_parts(arch, seed)
        name = configs.config_name(arch, "epsilon")
        path = tiny_model.write_single_file(out / f"{arch}.safetensors", parts)
        folder = tiny_model.write_configs(out / f"cfg-{arch}", CONFIGS / name, parts)
        encoders = tuple(parts[k] for k in ("text_encoder", "text_encoder_2") if k in parts)
        found[arch] = (path, folder, parts["unet"], encoders)
    return found


def unet_inputs(unet):
    gen = torch.Generator().manual_seed(3)
    cross = unet.config.cross_attention_dim
    args = [torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([500]),
            torch.randn(1, 7, cross, generator=gen)]
    if unet.config.addition_embed_type == "text_time":
        return args, {"added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=gen),
                                            "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]])}}
    return args, {}


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_single_file_loads_offline_with_same_outputs(checkpoints, arch, tmp_path):
    path, cfg_folder, unet, encoders = checkpoints[arch]
    loaded = single_file.load(path, config_folder=cfg_folder, cache_root=tmp_path)
    assert loaded.architecture == arch
    assert loaded.version == {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}[arch]
    args, kwargs = unet_inputs(unet)
    with torch.no_grad():
        diff = (loaded.unet(*args, **kwargs).sample - unet(*args, **kwargs).sample).abs().max()
        assert diff <= 1e-5, diff  # measured 6e-7 to 8e-7: same weights, float summation order
        ids = loaded.tokenizer(["a red circle"], padding="max_length", max_length=77,
                               return_tensors="pt").input_ids
        new = [loaded.text_encoder] + ([loaded.text_encoder_2] if arch == "sdxl" else [])
        for before, after in zip(encoders, new):
            assert torch.allclose(before(ids)[0], after(ids)[0], atol=1e-6)
    new_sd = loaded.unet.state_dict()  # every weight arrived unchanged
    assert all(torch.equal(value, new_sd[key]) for key, value in unet.state_dict().items())
    # The shipped scheduler config reached the noise scheduler; SD2 was guessed from the weights.
    assert loaded.noise_scheduler.config.prediction_type == "epsilon"
    assert loaded.detected.prediction_source == ("weights" if arch == "sd2" else "default")
    if arch == "sdxl":
        assert loaded.tokenizer_2.pad_token == "!" and loaded.tokenizer.pad_token != "!"
        assert loaded.noise_scheduler.config.timestep_spacing == "leading"
    # The assembled folder names the checkpoint, so training/cache.py's fingerprints differ.
    ident = json.loads((loaded.folder / "vae" / single_file.IDENTITY_FILE).read_text())
    assert ident["checkpoint"] == str(path.resolve())
    assert not any(p.device.type == "meta" for p in loaded.unet.parameters())


def test_markers_and_overrides_reach_the_scheduler(checkpoints, tmp_path):
    from safetensors.torch import load_file

    path, cfg_folder, _, _ = checkpoints["sdxl"]
    marked = tmp_path / "vpred.safetensors"
    save_file({**load_file(path), "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, marked)
    loaded = single_file.load(marked, config_folder=cfg_folder, cache_root=tmp_path / "c")
    config = loaded.noise_scheduler.config
    assert (config.prediction_type, config.rescale_betas_zero_snr) == ("v_prediction", True)
    assert loaded.detected.prediction_source == "marker" and loaded.zero_terminal_snr
    again = single_file.load(marked, config_folder=cfg_folder, cache_root=tmp_path / "c")
    assert again.folder == loaded.folder  # reused, not rebuilt
    eps = single_file.load(marked, config_folder=cfg_folder, cache_root=tmp_path / "c",
                           prediction_type="epsilon", zero_terminal_snr=False)
    assert eps.folder != loaded.folder
    assert eps.noise_scheduler.config.prediction_type == "epsilon"
    assert not eps.noise_scheduler.config.rescale_betas_zero_snr


def test_sd2_override_and_shipped_config_choice(checkpoints, tmp_path):
    path, cfg_folder, _, _ = checkpoints["sd2"]
    loaded = single_file.load(path, config_folder=cfg_folder, cache_root=tmp_path,
                              prediction_type="v_prediction")
    assert loaded.noise_scheduler.config.prediction_type == "v_prediction"
    assert configs.config_name("sd2", "v_prediction") == "sd2-v"
    assert configs.config_name("sd2", "epsilon") == "sd2-base"


def test_missing_weights_and_tokenizer_files_are_refused(checkpoints, tmp_path):
    from safetensors.torch import load_file

    path, cfg_folder, _, _ = checkpoints["sd1"]
    tensors = load_file(path)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in tensors.items() if "output_blocks.1." not in k}, partial)
    with pytest.raises(single_file.SingleFileError, match="incomplete") as info:
        single_file.load(partial, config_folder=cfg_folder, cache_root=tmp_path / "c")
    assert "intact copy" in info.value.hint
    no_vocab = shutil.copytree(cfg_folder, tmp_path / "no-vocab")
    (no_vocab / "tokenizer" / "vocab.json").unlink()
    with pytest.raises(single_file.SingleFileError, match="tokenizer files") as info:
        single_file.load(path, config_folder=no_vocab, cache_root=tmp_path / "c",
                         bpe_folder=tmp_path / "no-bpe-here")
    assert "make_clip_bpe.py" in info.value.hint


def test_shipped_configs_are_complete_and_consistent():
    """Values of the public configs (lora-formats.md §8.4) that loading depends on."""
    def read(name, sub):
        return json.loads((CONFIGS / name / sub).read_text())

    for name in ("sd15", "sd2-base", "sd2-v", "sdxl-base"):
        index = read(name, "model_index.json")
        for component, spec in index.items():
            if isinstance(spec, list) and spec[0] is not None:
                kind = "scheduler_config.json" if component == "scheduler" else \
                    "tokenizer_config.json" if component.startswith("tokenizer") else \
                    "config.json"
                assert (CONFIGS / name / component / kind).is_file(), (name, component)
        assert not list((CONFIGS / name).rglob("vocab.json"))  # generated, never committed
    assert read("sd15", "unet/config.json")["cross_attention_dim"] == 768
    assert read("sd2-v", "scheduler/scheduler_config.json")["prediction_type"] == "v_prediction"
    assert read("sd2-base", "scheduler/scheduler_config.json")["prediction_type"] == "epsilon"
    assert read("sd2-v", "unet/config.json")["attention_head_dim"] == [5, 10, 20, 20]
    assert read("sd2-v", "text_encoder/config.json")["num_hidden_layers"] == 23
    xl = read("sdxl-base", "unet/config.json")
    assert (xl["addition_embed_type"], xl["cross_attention_dim"],
            xl["projection_class_embeddings_input_dim"]) == ("text_time", 2048, 2816)
    assert read("sdxl-base", "vae/config.json")["force_upcast"] is True
    assert read("sdxl-base", "tokenizer_2/special_tokens_map.json")["pad_token"] == "!"


# --- kohya names on a tiny SDXL: SGM + lora_te1_/lora_te2_ reload in diffusers -----------

def test_tiny_sdxl_lora_with_text_encoders_reloads_in_diffusers(checkpoints, tmp_path):
    """SGM UNet names + lora_te1_/lora_te2_ load in diffusers with the trained outputs."""
    from diffusers import StableDiffusionXLPipeline

    path, cfg_folder, _, _ = checkpoints["sdxl"]
    base = single_file.load(path, config_folder=cfg_folder, cache_root=tmp_path / "c")
    encoders = (base.text_encoder, base.text_encoder_2)
    out = export_random_sdxl_lora(base.unet, encoders, tmp_path / "xl.safetensors",
                                  export_diffusers=True)
    fresh = single_file.load(path, config_folder=cfg_folder, cache_root=tmp_path / "c")
    pipe = StableDiffusionXLPipeline(
        vae=fresh.vae, text_encoder=fresh.text_encoder, text_encoder_2=fresh.text_encoder_2,
        tokenizer=fresh.tokenizer, tokenizer_2=fresh.tokenizer_2, unet=fresh.unet,
        scheduler=fresh.noise_scheduler)
    args, kwargs = unet_inputs(base.unet)
    ids = base.tokenizer(["a red circle"], return_tensors="pt").input_ids
    with torch.no_grad():
        trained = [base.unet(*args, **kwargs).sample] + [te(ids)[0] for te in encoders]
        before = [pipe.unet(*args, **kwargs).sample, pipe.text_encoder(ids)[0],
                  pipe.text_encoder_2(ids)[0]]
        pipe.load_lora_weights(str(tmp_path), weight_name="xl.safetensors")
        after = [pipe.unet(*args, **kwargs).sample, pipe.text_encoder(ids)[0],
                 pipe.text_encoder_2(ids)[0]]
        pipe.unload_lora_weights()  # the diffusers-format copy (UNet + both encoders) too
        pipe.load_lora_weights(str(out[2].parent))
        diffusers_format = [pipe.unet(*args, **kwargs).sample, pipe.text_encoder(ids)[0],
                            pipe.text_encoder_2(ids)[0]]
    for t, b, a, d in zip(trained, before, after, diffusers_format):
        assert (t - b).abs().max() > 0.05  # the LoRA visibly changes each model...
        assert (t - a).abs().max() <= 1e-5  # ...and reloads exactly (fp32 file)
        assert (t - d).abs().max() <= 1e-5
    from studio.safetensors_header import read_header

    _, meta = read_header(out[0])
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["ss_network_train_unet_only"] == "False"
    assert json.loads(out[1].read_text())["sd version"] == "SDXL"
