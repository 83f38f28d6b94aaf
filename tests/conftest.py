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
    from studio.project import Project
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
