"""`python -m training check`: the pre-flight report, as text and JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image

from conftest import ROOT, make_project, worker_env


def check(project, *args):
    return subprocess.run([sys.executable, "-m", "training", "check", str(project), *args],
                          cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=120)


def test_check_reports_plan_model_and_doctor(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, n_images=22, max_steps=0, epochs=3,
                           batch_size=4, bucket_step=16, min_bucket_side=32)
    Image.new("RGB", (96, 48), "green").save(project / "dataset" / "wide.png")
    (project / "dataset" / "wide.txt").write_text("a wide green field")
    proc = check(project, "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["images"] == 23 and r["validation_images"] == 2 and r["training_images"] == 21
    assert sum(r["buckets"].values()) == 21
    per_bucket = sum(-(-n // 4) for n in r["buckets"].values())
    assert r["steps_per_epoch"] == per_bucket and r["total_steps"] == 3 * per_bucket
    assert r["lora"]["layers"] == 32 and r["lora"]["params"] == 15_360
    assert r["device"]["kind"] == "cpu" and [p["preset"] for p in r["presets"]][0] == "gpu-6gb"
    # The time counts the samples (each epoch) and validation losses (2 held out) too.
    parts = r["estimated_parts"]
    assert abs(parts["training"] - r["seconds_per_step"] * r["total_steps"]) < 0.01
    assert parts["samples"] > 0 and parts["validation"] > 0
    assert abs(r["estimated_seconds"] - sum(parts.values())) < 0.2
    text = check(project).stdout
    assert "Steps:" in text and "Dataset check of" in text and "Buckets:" in text
    assert "Time (rough):" in text and "samples" in text and "validation" in text


def test_check_fails_on_a_broken_dataset(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, n_images=3)
    (project / "dataset" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    proc = check(project)
    assert proc.returncode == 2
    assert "bad.png" in proc.stdout + proc.stderr


def test_check_reports_the_planners_figure_or_says_not_predicted(tmp_path, tiny_model):
    """One memory figure (issue 17 item 9): check shows the plan `plan-memory` cached for these
    settings, and without one says so instead of a rough guess."""
    from conftest import run_cli

    project = make_project(tmp_path / "p", tiny_model, n_images=4)
    before = json.loads(check(project, "--json").stdout)
    assert before["gpu_memory"]["predicted"] is False and before["gpu_memory_bytes"] is None
    assert "not predicted yet" in check(project).stdout
    assert all(p["gpu_bytes"] is None and not p["predicted"] for p in before["presets"])
    planned = run_cli("plan-memory", str(project), "--gpu-gb", "8", "--no-fit", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = planned.events[0]
    assert plan["fit"] is None and plan["fits"] is True  # --no-fit: the plan alone
    after = json.loads(check(project, "--json").stdout)
    assert after["gpu_memory"]["predicted"] is True
    assert after["gpu_memory_bytes"] == plan["plan"]["needed_bytes"]
    assert after["gpu_memory"]["peak_bytes"] == plan["plan"]["peak_bytes"]
    assert "GPU memory (predicted): peak" in check(project).stdout
