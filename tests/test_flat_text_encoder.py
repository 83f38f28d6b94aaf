"""A single file whose SD1 text encoder is stored without `text_model.` (pre-2022 tools, and
transformers >= 5.6's flat CLIPTextModel) loads as A1111 and ComfyUI load it (issue 13, item 12)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, parse_events, worker_env

pytestmark = pytest.mark.slow


def generate(model, out, tmp_path):
    env = dict(worker_env(), LORA_STUDIO_HOME=str(tmp_path / "home"),
               LORA_STUDIO_MODEL_CONFIGS=str(tmp_path / "configs"))
    proc = subprocess.run([sys.executable, "-m", "training", "generate", "--model", str(model),
                           "--prompt", "a red circle", "--size", "64x64", "--steps", "2",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    events = parse_events(proc.stdout)
    assert proc.returncode == 0, (events[-1:], proc.stderr[-2000:])
    return np.asarray(Image.open(events[-1]["paths"][0]), dtype=np.int16)


def test_flat_text_encoder_layout_generates_the_same_images(tmp_path):
    from safetensors.torch import load_file, save_file

    from training import tiny_model

    current = tiny_model.build_single_file(tmp_path / "current.safetensors", "sd1",
                                           tmp_path / "configs")
    tensors = load_file(str(current))
    flat = {k.replace("cond_stage_model.transformer.text_model.",
                      "cond_stage_model.transformer."): v for k, v in tensors.items()}
    assert not any(".text_model." in k for k in flat) and len(flat) == len(tensors)
    save_file(flat, str(tmp_path / "flat.safetensors"))

    a = generate(current, tmp_path / "out-current", tmp_path)
    b = generate(tmp_path / "flat.safetensors", tmp_path / "out-flat", tmp_path)
    assert a.std() > 5 and np.array_equal(a, b)  # the same text encoder weights, read alike
