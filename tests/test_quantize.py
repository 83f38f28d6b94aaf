"""Issue 15 item 2: a quantized frozen base (QLoRA). Refusals name base_quantization; int8 trains
through the CLI wherever torchao runs and exports the same kohya LoRA as an unquantized run."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest

from conftest import make_project, run_cli

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
HAS_CUDA = False
try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    pass


def header(path: Path) -> dict:
    with path.open("rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
    head.pop("__metadata__", None)
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in head.items()}


def assert_refused(run, *needles: str) -> None:
    assert run.returncode == 2, run.stderr
    error = run.events[-1]
    assert error["event"] == "error", run.events
    assert error["field"] == "base_quantization"
    for needle in needles:
        assert needle in error["message"] + error["hint"], error


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without an NVIDIA GPU")
def test_nf4_without_an_nvidia_gpu_is_refused_before_loading(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, n_images=3)
    run = run_cli("train", str(project), "--set", "base_quantization=nf4")
    assert_refused(run, "NVIDIA GPU", "int8")
    assert not any(e["event"] == "status" and e.get("phase") == "caching" for e in run.events)


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without an NVIDIA GPU")
def test_fp8_on_the_cpu_is_refused(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, n_images=3)
    assert_refused(run_cli("train", str(project), "--set", "base_quantization=fp8"),
                   "NVIDIA GPU")


@pytest.mark.skipif(HAS_TORCHAO, reason="checks the refusal where torchao is not installed")
def test_int8_without_torchao_says_what_to_install(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, n_images=3)
    assert_refused(run_cli("train", str(project), "--set", "base_quantization=int8"),
                   "torchao", "pip install torchao")


def test_fit_to_my_gpu_reads_and_offers_the_setting():
    from studio import config
    from studio.machine.memory_fit import CONFIG_NAMES, QUANTIZATIONS, candidates, settings_for

    cfg = config.from_dict({"base_quantization": "int8", "resolution": 512})
    s = settings_for(cfg, "m", [(512, 512)])
    assert s.quantization == "int8"
    assert [c.quantization for c in candidates(s)][-1] == "nf4"  # only smaller ones after it
    assert set(QUANTIZATIONS) == {q.value for q in config.BaseQuantization}
    assert CONFIG_NAMES["quantization"] in config.FIELDS


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCHAO, reason="int8 needs torchao (pip install torchao), not "
                                            "installed here")
def test_int8_base_trains_and_exports_the_same_lora(tmp_path, tiny_model):
    runs = {}
    for quant in ("none", "int8"):
        project = make_project(tmp_path / quant, tiny_model, n_images=6, max_steps=8,
                               validation_images=2, evaluate_after_training=False)
        run = run_cli("train", str(project), "--set", f"base_quantization={quant}")
        assert run.returncode == 0, run.stderr[-3000:]
        runs[quant] = (project, {e["step"]: e["loss"] for e in run.of("validation")})
    files = {q: sorted((p / "runs").glob("*/*.safetensors")) for q, (p, _) in runs.items()}
    assert files["none"] and len(files["none"]) == len(files["int8"])
    assert header(files["none"][0]) == header(files["int8"][0])  # same keys, shapes, dtypes
    plain, quant = runs["none"][1], runs["int8"][1]
    assert plain.keys() == quant.keys() and len(plain) >= 2
    # The validation loss (fixed noise, held-out images) along the run: int8 rounding of the
    # frozen weights moves it a little, it does not change the training.
    worst = max(abs(plain[s] - quant[s]) / abs(plain[s]) for s in plain)
    assert worst < 0.05, (plain, quant)
