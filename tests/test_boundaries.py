"""The package layering, proved in clean interpreters (lazy imports included)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

ML = ("torch", "diffusers", "peft", "accelerate", "transformers")


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["studio.config", "studio.project", "studio.dataset",
                                    "studio.protocol", "studio.atomic",
                                    "studio.safetensors_header", "studio.images",
                                    "studio.doctor", "studio.paths", "studio.buckets",
                                    "studio.caption_augment", "studio.infotext",
                                    "studio.grid", "studio.errors", "studio.plan",
                                    "studio.base_model.detect", "studio.base_model.inspect",
                                    "studio.base_model.configs", "studio.diskspace",
                                    "studio.units", "studio.estimate"])
def test_studio_needs_neither_qt_nor_torch(module):
    loaded = loaded_after(f"import {module}")
    assert not loaded & {*ML, "PySide6", "ui", "training"}


def test_training_never_imports_qt():
    loaded = loaded_after("import training.train, training.export, training.__main__")
    assert "torch" in loaded  # the probe really imported the worker
    assert not loaded & {"PySide6", "ui"}


def test_bad_input_is_reported_without_loading_the_ml_stack():
    # The CLI checks settings and data before importing torch (≈7 s), so errors come at once.
    loaded = loaded_after("import training.__main__ as m, training.events")
    assert not loaded & set(ML)
