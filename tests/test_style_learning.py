"""Training transfers the demo style (issue 3): a small run of benchmarks/style_learning.py.

Trains the shipped demo preset on the pocket model through the real CLI (deterministic with its
seed), then judges held-out prompts with and without the LoRA. Thresholds were checked with
several sampling seeds (see docs/benchmarks.md, "Style-learning benchmark") and hold with margin.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from studio.runs.demo import assets_present  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(not assets_present(), reason="the pocket model / demo style set are not shipped")
def test_demo_lora_learns_the_style_and_keeps_the_prompt(tmp_path):
    import style_learning

    r = style_learning.main(["--quick", "--grid", str(tmp_path / "grid.png")])
    # The full benchmark (12 prompts x 4 seeds) measures a combined ratio of 0.29 (bar: 0.30) with
    # no adherence drop (bar: 5); this quick version measured 0.30, gram 0.29, no drop. On 12
    # images one miss is 8.3 points and the ratio is noisier, so its bounds are looser, yet below
    # what the pocket model before its styles stage scored on the full run (0.45-0.47).
    assert r["ratio"]["combined"] <= 0.40, r
    assert r["ratio"]["gram"] <= 0.45, r
    assert r["adherence_without"]["both"] >= 90, r
    assert r["adherence_drop"] <= 10, r
    assert (tmp_path / "grid.png").is_file()
