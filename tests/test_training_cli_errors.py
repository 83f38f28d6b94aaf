"""Bad input reaches the user as one clear error naming the field or file, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_project, run_cli


@pytest.fixture
def project(tmp_path) -> Path:
    # These fail before any model is loaded, so a placeholder model path is enough.
    return make_project(tmp_path / "p", tmp_path / "no-model-needed", n_images=3)


def assert_rejected(run, *needles: str) -> str:
    assert run.returncode == 2, run.stderr
    assert [e["event"] for e in run.events] == ["hello", "error"]
    message = run.events[-1]["message"]
    for needle in needles:
        assert needle in message, message
    assert run.events[-1]["hint"]
    return message


def test_unknown_key_names_the_nearest_setting(project):
    (project / "project.toml").write_text('learnig_rate = 1e-4\n')
    assert_rejected(run_cli("train", str(project)), "learnig_rate", "did you mean 'learning_rate'")
    assert not (project / "runs").exists()


def test_every_bad_value_is_reported_at_once(project):
    run = run_cli("train", str(project), "--set", "rank=0", "--set", "resolution=33",
                  "--set", "learning_rate=2")
    message = assert_rejected(run, "rank", "resolution", "learning_rate")
    assert "3 problem(s)" in message
    assert not (project / "runs").exists()


def test_wrong_type_is_named(project):
    assert_rejected(run_cli("train", str(project), "--set", "rank=lots"),
                    "rank", "whole number")
    assert_rejected(run_cli("train", str(project), "--set", "mixed_precision=fp8"),
                    "mixed_precision", "bf16")


def test_empty_dataset(project):
    for f in (project / "dataset").iterdir():
        f.unlink()
    assert_rejected(run_cli("train", str(project)), "contains no images")


def test_missing_dataset_folder(project):
    assert_rejected(run_cli("train", str(project), "--set", "dataset_dir=nowhere"),
                    "does not exist")


def test_undecodable_image_is_named(project):
    (project / "dataset" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert_rejected(run_cli("train", str(project)), "broken.png", "is damaged",
                    "re-export or remove")
    assert (project / "dataset" / "broken.png").read_bytes().endswith(b"not really")


def test_caption_that_is_not_utf8_is_a_warning_not_a_refusal(project):
    # A Windows Notepad ("ANSI", cp1252) caption trains, as the Dataset tab says; the worker
    # logs the same warning. The run gets past the dataset and stops at the placeholder model.
    (project / "dataset" / "000.txt").write_bytes("caf\xe9 cr\xe8me".encode("cp1252"))
    run = run_cli("train", str(project))
    assert run.returncode == 2 and run.events[-1]["field"] == "base_model", run.events
    assert "000.txt" in run.stderr and "not UTF-8" in run.stderr and "cp1252" in run.stderr


def test_missing_base_model_is_a_configuration_error(project):
    run = run_cli("train", str(project))
    assert run.returncode == 2
    assert run.events[-1]["event"] == "error" and run.events[-1]["field"] == "base_model"
    assert "not found" in run.events[-1]["message"]


def test_pickle_checkpoints_are_refused(project, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not unpickled")
    run = run_cli("train", str(project), "--set", f"base_model={ckpt}")
    assert run.returncode == 2 and "pickle" in run.events[-1]["message"]


def test_defaults_round_trip_through_the_cli():
    import subprocess
    import sys
    import tomllib

    from conftest import ROOT, worker_env
    from studio.config import TrainConfig, from_dict

    proc = subprocess.run([sys.executable, "-m", "training", "defaults"], cwd=ROOT,
                          env=worker_env(), capture_output=True, text=True)
    assert proc.returncode == 0
    assert "# Rank:" in proc.stdout and "# Range: 1 to 256." in proc.stdout
    assert from_dict(tomllib.loads(proc.stdout)) == TrainConfig()


def test_excluded_broken_image_is_skipped_not_fatal(project):
    # Excluding an image leaves it on disk and out of the dataset checks.
    from studio import dataset

    (project / "dataset" / "broken.png").write_bytes(b"junk")
    items = dataset.load(project / "dataset", exclude=("broken.png", "000.png"))
    assert [i.image.name for i in items] == ["001.png", "002.png"]
    assert (project / "dataset" / "broken.png").exists()


class _Trap:
    """Unpickling this creates a marker file: proof that a loader ran a user's pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_model_folder_with_only_pickled_weights_is_refused_unopened(tmp_path, tiny_model):
    import pickle
    import shutil

    model = tmp_path / "pickled-model"
    shutil.copytree(tiny_model, model)
    marker = tmp_path / "unpickled.marker"
    (model / "unet" / "diffusion_model_weights.safetensors").unlink(missing_ok=True)
    for f in (model / "unet").glob("*.safetensors"):
        f.unlink()
    (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    project = make_project(tmp_path / "p", model, n_images=2)
    run = run_cli("train", str(project))
    assert run.returncode == 2 and run.events[-1]["field"] == "base_model"
    assert not marker.exists()
