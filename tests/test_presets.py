"""Every shipped preset is a valid partial config (a typo would otherwise surface mid-run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio import config

PRESETS = sorted((Path(__file__).parent.parent / "assets" / "presets").glob("*.toml"))


def test_the_expected_presets_ship():
    names = {p.stem for p in PRESETS}
    assert {"demo", "style-sd15", "style-sdxl", "gpu-6gb", "gpu-8gb", "gpu-12gb", "gpu-16gb",
            "gpu-24gb"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_validates(path):
    cfg = config.load(path)
    assert config.validate(cfg) == []
    assert config.load(path) != config.TrainConfig() or path.stem == "empty"


def test_presets_layer():
    style = config.load(PRESETS[0].parent / "style-sdxl.toml")
    small = config.load(PRESETS[0].parent / "gpu-8gb.toml", style)
    assert small.resolution == 1024 and small.optimizer == config.Optimizer.adafactor
