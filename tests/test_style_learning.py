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
    # The full benchmark measures a combined ratio of 0.45-0.47 (bar: 0.5) and an adherence drop
    # of 4-8 points (bar: 10). On 12 images one miss is 8.3 points and the ratio is noisier, so
    # the small version checks a clear fall with looser bounds than the benchmark's bar.
    assert r["ratio"]["combined"] <= 0.6, r
    assert r["ratio"]["gram"] <= 0.55, r  # measured 0.28-0.45 across seeds and runs
    assert r["adherence_without"]["both"] >= 90, r
    assert r["adherence_drop"] <= 20, r
    assert (tmp_path / "grid.png").is_file()
