"""LoRA exporter: kohya names, reload equality in diffusers, metadata, hashes, atomic writes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from studio.config import SaveDtype, TrainConfig  # noqa: E402
from studio.safetensors_header import data_section_sha256, legacy_hash, read_header  # noqa: E402
from training import export  # noqa: E402
from training.metadata import TrainingFacts  # noqa: E402

from conftest import load_pipe, unet_with_random_lora  # noqa: E402

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# alpha != rank, so a converter that writes alpha = rank (diffusers') would be 2x too strong.
CFG = TrainConfig(rank=4, alpha=2.0, target_modules=TARGETS, save_dtype=SaveDtype.fp32,
                  output_name="tiny-style", trigger_word="zxq", resolution=64, author="Ada",
                  description="A test style.", export_diffusers=True, seed=7)
FACTS = TrainingFacts(
    base_model_name="model", base_model_version="sd_v1", prediction_type="epsilon",
    num_images=3, steps=12, epochs=4, max_steps=12, tag_frequency={"zxq": 3, "red circle": 2},
    dataset_name="shapes", training_started_at=1_700_000_000.0, session_id=1234,
    finished_at=1_700_000_100.0)


@pytest.fixture(scope="module")
def model_dir(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def trained(model_dir):
    """A UNet with a LoRA whose lora_B is random (as after training), and a fixed input."""
    unet = unet_with_random_lora(model_dir, CFG.rank, CFG.alpha, TARGETS)
    gen = torch.Generator().manual_seed(1)
    inputs = (torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([10]),
              torch.randn(1, 6, 32, generator=gen))
    return unet, inputs


def forward(unet, inputs) -> torch.Tensor:
    with torch.no_grad():
        return unet(*inputs).sample


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    unet, _ = trained
    path = tmp_path_factory.mktemp("out") / "tiny-style.safetensors"
    return export.export_adapter(unet, CFG, FACTS, path)


def n_targets(unet) -> int:
    return sum(1 for name, _ in unet.named_modules() if name.endswith(tuple("." + t for t in TARGETS)))


def test_kohya_key_names(trained, exported):
    unet, _ = trained
    table, _ = read_header(exported[0])
    keys = set(table)
    assert len(keys) == 3 * n_targets(unet) == 96
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys
    assert "lora_unet_up_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0.alpha" in keys
    assert all(k.startswith("lora_unet_") and k.count(".") in (1, 2) for k in keys)
    from safetensors.torch import load_file

    tensors = load_file(exported[0])
    assert tensors[f"{name}.lora_down.weight"].shape == (4, 64)  # down_blocks.1 is 64 wide
    assert tensors[f"{name}.alpha"].dim() == 0
    assert {float(v) for k, v in tensors.items() if k.endswith(".alpha")} == {2.0}


def test_kohya_file_reloads_equal(model_dir, trained, exported, tmp_path):
    unet, inputs = trained
    expected = forward(unet, inputs)
    base = load_pipe(model_dir)
    effect = (forward(base.unet, inputs) - expected).abs().max().item()
    assert effect > 0.05  # the LoRA visibly changes the output, so a wrong alpha would show
    base.load_lora_weights(str(exported[0].parent), weight_name=exported[0].name)
    assert (forward(base.unet, inputs) - expected).abs().max().item() <= 1e-4

    from peft import get_peft_model_state_dict

    half = export.kohya_state_dict(get_peft_model_state_dict(unet), CFG.alpha, dtype=torch.float16)
    export.save_lora(tmp_path / "half.safetensors", half, {})
    pipe = load_pipe(model_dir)
    pipe.load_lora_weights(str(tmp_path), weight_name="half.safetensors")
    assert (forward(pipe.unet, inputs) - expected).abs().max().item() <= 1e-3  # measured 2.7e-5


def test_diffusers_file_reloads_equal(model_dir, trained, exported):
    unet, inputs = trained
    folder = exported[0].parent / "tiny-style-diffusers"
    assert exported[2] == folder / "pytorch_lora_weights.safetensors"
    pipe = load_pipe(model_dir)
    pipe.load_lora_weights(str(folder))
    assert (forward(pipe.unet, inputs) - forward(unet, inputs)).abs().max().item() <= 1e-4
    _, meta = read_header(exported[2])  # where alpha survives (lora-formats.md §4 defect 5)
    assert json.loads(meta["lora_adapter_metadata"])["unet.lora_alpha"] == 2.0
    assert stat.S_IMODE(exported[2].stat().st_mode) == 0o644


def test_metadata_and_sidecar(exported):
    _, meta = read_header(exported[0])
    assert all(isinstance(v, str) for v in meta.values())
    expected = {
        "format": "pt", "ss_network_module": "networks.lora", "ss_network_dim": "4",
        "ss_network_alpha": "2.0", "ss_v2": "False", "ss_base_model_version": "sd_v1",
        "ss_output_name": "tiny-style", "ss_resolution": "(64, 64)", "ss_num_train_images": "3",
        "ss_steps": "12", "ss_max_train_steps": "12", "ss_epoch": "4", "ss_num_epochs": "10",
        "ss_learning_rate": "0.0001", "ss_unet_lr": "0.0001",
        "ss_lr_scheduler": "constant", "ss_lr_warmup_steps": "0", "ss_seed": "7",
        "ss_sd_model_name": "model", "ss_training_started_at": "1700000000.0",
        "ss_training_finished_at": "1700000100.0", "ss_session_id": "1234",
        "ss_batch_size_per_device": "1", "ss_max_grad_norm": "1.0", "ss_mixed_precision": "auto",
        "ss_gradient_checkpointing": "False",
        "modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers", "modelspec.title": "tiny-style",
        "modelspec.trigger_phrase": "zxq", "modelspec.resolution": "64x64",
        "modelspec.prediction_type": "epsilon", "modelspec.author": "Ada",
        "modelspec.description": "A test style."}
    assert {k: meta.get(k) for k in expected} == expected
    assert json.loads(meta["ss_tag_frequency"]) == {"shapes": {"zxq": 3, "red circle": 2}}
    assert json.loads(meta["ss_network_args"]) == {"target_modules": "to_q,to_k,to_v,to_out.0"}
    assert meta["ss_optimizer"].startswith("torch.optim.adamw.AdamW")
    assert meta["modelspec.date"].startswith("2023-11-1")
    assert "zxq" in meta["modelspec.usage_hint"]
    sidecar = json.loads(exported[1].read_text())
    assert exported[1] == exported[0].with_suffix(".json")
    assert sidecar["activation text"] == "zxq" and sidecar["sd version"] == "SD1"
    assert sidecar["preferred weight"] == 1.0 and sidecar["description"] == "A test style."


def test_hashes_match_written_bytes(exported):
    raw = exported[0].read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    _, meta = read_header(exported[0])
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + n:]).hexdigest()
    assert meta["modelspec.hash_sha256"] == "0x" + meta["sshs_model_hash"]
    assert meta["sshs_legacy_hash"] == "e3b0c442"  # < 1 MiB: hash of nothing, as in A1111


def test_hashes_of_large_file_and_metadata_invariance(tmp_path):
    gen = torch.Generator().manual_seed(1)
    tensors = {"lora_unet_x.lora_down.weight": torch.randn(4, 300_000, generator=gen),
               "lora_unet_x.lora_up.weight": torch.randn(8, 4, generator=gen),
               "lora_unet_x.alpha": torch.tensor(2.0)}
    meta1 = export.save_lora(tmp_path / "a.safetensors", tensors, {"ss_output_name": "a"})
    meta2 = export.save_lora(tmp_path / "b.safetensors", tensors,
                             {"ss_output_name": "b", "modelspec.description": "x" * 999})
    raw = (tmp_path / "a.safetensors").read_bytes()
    assert len(raw) > 0x110000
    assert meta1["sshs_legacy_hash"] == hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]
    assert meta1["sshs_legacy_hash"] == legacy_hash(tmp_path / "a.safetensors")
    assert raw != (tmp_path / "b.safetensors").read_bytes()
    assert meta1["sshs_model_hash"] == meta2["sshs_model_hash"] \
        == data_section_sha256(tmp_path / "b.safetensors")
    assert read_header(tmp_path / "a.safetensors")[1] == meta1


def test_file_mode_and_no_temp_files(exported):
    folder = exported[0].parent
    for path in exported:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    names = sorted(p.name for p in folder.rglob("*") if p.is_file())
    assert names == ["pytorch_lora_weights.safetensors", "tiny-style.json",
                     "tiny-style.safetensors"]


def _tensors():
    return {"lora_unet_m.lora_down.weight": torch.ones(2, 3),
            "lora_unet_m.lora_up.weight": torch.ones(3, 2), "lora_unet_m.alpha": torch.tensor(1.)}


@pytest.mark.parametrize("where", ["_serialize", "_write_bytes"])
def test_failed_write_keeps_earlier_file(tmp_path, monkeypatch, where):
    path = tmp_path / "keep.safetensors"
    export.save_lora(path, _tensors(), {"ss_output_name": "v1"})
    before = path.read_bytes()

    def broken(target, data):
        if where == "_write_bytes":  # a partial write, then the disk fills up
            Path(target).write_bytes(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(export, where, broken)
    with pytest.raises(OSError, match="disk full"):
        export.save_lora(path, {k: v * 2 for k, v in _tensors().items()}, {"ss_output_name": "v2"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]


def test_validation_refuses_bad_state_dicts():
    with pytest.raises(ValueError, match="lora_magnitude_vector"):
        export.kohya_state_dict({"a.lora_A.weight": torch.ones(1, 1),
                                 "a.lora_B.weight": torch.ones(1, 1),
                                 "a.lora_magnitude_vector": torch.ones(1)}, 1.0)
    with pytest.raises(ValueError, match="only"):
        export.kohya_state_dict({"a.lora_A.weight": torch.ones(1, 1)}, 1.0)
    bad = {**_tensors(), "unet.m.lora_A.weight": torch.ones(2, 3)}
    with pytest.raises(ValueError, match="kohya prefix"):
        export.validate_kohya(bad)
    with pytest.raises(ValueError, match="missing"):
        export.validate_kohya({k: v for k, v in _tensors().items() if not k.endswith("alpha")})
    with pytest.raises(ValueError, match="model has 2"):
        export.validate_kohya(_tensors(), expected_modules=2)


class CountingFile(io.BytesIO):
    """Records how many bytes were read, to prove the reader stops at the header."""

    name = "counted.safetensors"
    read_total = 0

    def read(self, size=-1):
        data = super().read(size)
        self.read_total += len(data)
        return data


def test_read_header_refuses_bad_files(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="short.safetensors.*shorter than"):
        read_header(short)

    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ValueError, match="huge.safetensors.*limit"):
        read_header(huge)

    valid = tmp_path / "valid.safetensors"
    export.save_lora(valid, _tensors(), {"ss_output_name": "x"})
    raw = valid.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[: 8 + n // 2])
    with pytest.raises(ValueError, match="cut.safetensors.*truncated"):
        read_header(cut)
    cut.write_bytes(raw[:-4])  # header intact, tensor data cut short
    with pytest.raises(ValueError, match="truncated"):
        read_header(cut)

    junk = CountingFile(struct.pack("<Q", 9) + b"not json!" + b"\0" * 5_000_000)
    with pytest.raises(ValueError, match="counted.safetensors.*not valid JSON"):
        read_header(junk)
    assert junk.read_total == 8 + 9
    array = CountingFile(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(ValueError, match="not an object"):
        read_header(array)
    with pytest.raises(ValueError, match="limit"):
        read_header(valid, max_header_bytes=16)


def test_header_module_does_not_import_torch():
    code = "import sys, studio.safetensors_header; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
