"""Shared fixtures: a tiny SD1.5-architecture model built offline, a small project, a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random tiny SD1.x diffusers folder (≈5 MB, built in ≈0.5 s, identical every build)."""
    import torch

    torch.set_num_threads(1)
    from training import tiny_model as builder

    return builder.build(tmp_path_factory.mktemp("models") / "tiny-sd15")


def make_project(root: Path, model: Path, n_images: int = 6, **settings) -> Path:
    from studio import config
    from studio.runs.project import Project
    from training.demo import draw_shapes  # noqa: E402

    draw_shapes(root / "dataset", n_images, seed=1)
    base = dict(base_model=str(model), resolution=64, rank=4, alpha=2.0, max_steps=4,
                batch_size=2, learning_rate=1e-3, output_name="tiny-style",
                trigger_word="zxq", seed=7)
    base.update(settings)
    Project(root).save_config(config.from_dict(base))
    return root


@pytest.fixture
def project(tmp_path, tiny_model) -> Path:
    return make_project(tmp_path / "project", tiny_model)


@dataclass
class CliRun:
    returncode: int
    events: list[dict]
    stderr: str

    def of(self, name: str) -> list[dict]:
        return [e for e in self.events if e["event"] == name]


def worker_env() -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def run_cli(*args: str, timeout: float = 180, stdin=subprocess.DEVNULL) -> CliRun:
    """Run `python -m training ARGS` like the GUI or a terminal user would; parse its events."""
    proc = subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, env=worker_env(),
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)
    return CliRun(proc.returncode, parse_events(proc.stdout), proc.stderr)


def parse_events(stdout: str) -> list[dict]:
    events = []
    for line in stdout.splitlines():
        events.append(json.loads(line))  # stdout must hold nothing but JSON events
    return events


def load_pipe(folder: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        local_files_only=True)


def unet_with_random_lora(model_dir: Path, rank: int, alpha: float, targets, seed: int = 0,
                          scale: float = 0.3):
    """The model's UNet with a LoRA whose lora_B is random (as after training): a visible effect."""
    import torch
    from peft import LoraConfig

    unet = load_pipe(model_dir).unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True,
                                target_modules=list(targets)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return unet


@pytest.fixture(scope="session")
def lora_files(tiny_model, tmp_path_factory) -> list[Path]:
    """Two kohya LoRA files for the tiny model (like two checkpoints of one run)."""
    from studio.config import TrainConfig
    from training.export import export_adapter
    from training.metadata import TrainingFacts

    out = tmp_path_factory.mktemp("loras")
    cfg = TrainConfig(rank=4, alpha=4.0, output_name="tiny-style", resolution=64)
    paths = []
    for step, seed in ((50, 1), (100, 2)):
        unet = unet_with_random_lora(tiny_model, cfg.rank, cfg.alpha, cfg.target_modules, seed)
        facts = TrainingFacts(
            base_model_name="tiny", base_model_version="sd_v1", prediction_type="epsilon",
            num_images=6, steps=step, epochs=1, max_steps=100, tag_frequency={},
            dataset_name="d", training_started_at=0.0, session_id=1)
        paths.append(export_adapter(unet, cfg, facts, out / f"tiny-step{step}.safetensors")[0])
    return paths


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    from training import tiny_model as builder

    return builder.build_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")
