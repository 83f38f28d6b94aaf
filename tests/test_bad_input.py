"""Bad input fails at once, naming the setting or file, and writes nothing (issue 13, items 3, 8,
9, 10 and 15): NaN settings, output names too long for the files a run writes, a FIFO named like
an image, --run-dir in the dataset, model errors, and iPhone HEIC photos (which train)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, make_project, run_cli, worker_env

HEIC = Path(__file__).parent / "data" / "iphone.heic"


@pytest.fixture
def project(tmp_path) -> Path:
    # These fail before any model is loaded, so a placeholder model path is enough.
    return make_project(tmp_path / "p", tmp_path / "no-model-needed", n_images=3)


def refused(run, field: str, *needles: str) -> str:
    assert run.returncode == 2, (run.events[-1:], run.stderr[-1500:])
    error = run.events[-1]
    assert error["event"] == "error" and error["field"] == field, error
    for needle in needles:
        assert needle in error["message"], error["message"]
    return error["message"]


@pytest.mark.parametrize("setting", ["learning_rate=nan", "alpha=nan", "alpha=inf",
                                     "resume_point_every_minutes=nan", "noise_offset=-inf",
                                     "min_snr_gamma=NaN"])
def test_nan_and_inf_settings_name_the_field(project, setting):
    field = setting.split("=")[0]
    refused(run_cli("train", str(project), "--set", setting), field, "finite number")
    assert not (project / "runs").exists()


def test_output_name_too_long_for_the_files_a_run_writes(project):
    # 220 bytes passes the 255-byte name check, but "<name>-step000123.safetensors" while it is
    # written atomically (".<name>-step….safetensors.XXXXXXXX.tmp") would not fit.
    message = refused(run_cli("train", str(project), "--set", "output_name=" + "é" * 110),
                      "output_name", "too long")
    assert "shorten it by" in message
    assert not (project / "runs").exists()
    run = run_cli("train", str(project), "--set", "output_name=" + "a" * 217)  # fits: gets on
    assert run.events[-1]["field"] == "base_model"  # to the (placeholder) model


def test_a_fifo_named_like_an_image_never_hangs_check_or_train(project):
    os.mkfifo(project / "dataset" / "stuck.png")
    os.mkfifo(project / "dataset" / "001.txt.caption")  # not a caption name: ignored
    check = subprocess.run([sys.executable, "-m", "training", "check", str(project)], cwd=ROOT,
                           env=worker_env(), capture_output=True, text=True, timeout=120)
    assert "[not_a_file] stuck.png is not a regular file" in check.stdout
    train = run_cli("train", str(project), timeout=120)
    assert train.events[-1]["field"] == "base_model"  # past the dataset, not stuck on it
    assert "stuck.png is not a regular file" in train.stderr  # the warning, on both sides


@pytest.mark.parametrize("where", ["dataset", "dataset/run1", ".", "nonempty"])
def test_run_dir_never_in_the_dataset_or_over_the_project(project, where):
    (project / "nonempty").mkdir()
    (project / "nonempty" / "keep.txt").write_text("mine")
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    run = run_cli("train", str(project), "--run-dir", str(project / where))
    refused(run, "run_dir", "--run-dir")
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # nothing written


def test_model_errors_leave_no_run_folder(project, tmp_path):
    run = run_cli("train", str(project))  # the placeholder model does not exist
    refused(run, "base_model", "not found")
    assert not (project / "runs").exists()
    empty = tmp_path / "empty-run"
    empty.mkdir()
    run = run_cli("train", str(project), "--run-dir", str(empty))
    refused(run, "base_model")
    assert empty.is_dir() and not list(empty.iterdir())  # the artist's folder, left as it was


def test_iphone_heic_photos_are_trained(project):
    for i in range(2):
        shutil.copy(HEIC, project / "dataset" / f"phone{i}.heic")
        (project / "dataset" / f"phone{i}.txt").write_text("a phone photo")
    (project / "dataset" / "layers.psd").write_bytes(b"8BPS\0\x01" + bytes(100))
    run = run_cli("check", str(project), "--set", "resolution=64", "--json")
    doctor = run.events[0]["doctor"]
    assert doctor["usable"] == 5 and doctor["blocking"] == [], doctor["blocking"]
    assert {f["file"]: f["code"] for f in doctor["findings"]}.get("layers.psd") == "unsupported"
    train = run_cli("train", str(project), "--set", "resolution=64")
    assert train.events[-1]["field"] == "base_model"  # the dataset (with its .psd) trains
