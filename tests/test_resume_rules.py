"""`--resume` as the README promises (issue 13, items 4-6): a finished run is never reopened; a
damaged newest resume point falls back to the newest intact one with a warning naming it; a
setting that changes the data split is refused; with no resume point in the newest run, the
worker says which run it looked at and how to continue an older one, never picking it silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_project, run_cli
from studio.runs.project import RunDir

pytestmark = pytest.mark.slow

SETTINGS = dict(max_steps=6, batch_size=2, save_dtype="fp32", sample_every_n_epochs=0,
                save_every_n_steps=2, validation_images=2, learning_rate=1e-2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model) -> Path:
    """A project whose one run finished, with resume points (with the step LoRA files)."""
    project = make_project(tmp_path_factory.mktemp("resume") / "p", tiny_model, **SETTINGS)
    run = run_cli("train", str(project))
    assert run.returncode == 0, run.stderr[-2000:]
    return project


def copy_project(finished: Path, tmp_path: Path) -> tuple[Path, RunDir]:
    project = tmp_path / "p"
    shutil.copytree(finished, project, symlinks=True)
    return project, RunDir(next((project / "runs").iterdir()))


def crashed_copy(run: RunDir) -> RunDir:
    """The run as a power cut at step 6 would leave it: no `done`, no final LoRA (a later name,
    so it is the project's newest run)."""
    crashed = RunDir(run.path.with_name(run.path.name + "-z-crashed"))
    shutil.copytree(run.path, crashed.path)
    lines = crashed.events.read_text().splitlines()
    crashed.events.write_text("".join(f"{line}\n" for line in lines
                                      if json.loads(line)["event"] != "done"))
    crashed.adapter("tiny-style").unlink()
    return crashed


def test_a_finished_run_is_never_reopened(finished, tmp_path):
    project, run = copy_project(finished, tmp_path)
    lora = run.adapter("tiny-style")
    before = lora.read_bytes()
    resumed = run_cli("train", str(project), "--resume")
    assert resumed.returncode == 2
    error = resumed.events[-1]
    assert "finished" in error["message"] and run.path.name in error["message"]
    assert "start a new run" in error["hint"]
    assert lora.read_bytes() == before  # the finished LoRA is untouched
    by_folder = run_cli("train", str(project), "--resume", str(run.path))
    assert by_folder.returncode == 2 and "finished" in by_folder.events[-1]["message"]


def test_a_damaged_newest_resume_point_falls_back_with_a_warning(finished, tmp_path):
    project, run = copy_project(finished, tmp_path)
    crashed = crashed_copy(run)
    *_, intact, newest = crashed.resume_points()
    data = (newest / "lora.safetensors").read_bytes()
    (newest / "lora.safetensors").write_bytes(data[: len(data) // 3])  # truncated
    resumed = run_cli("train", str(project), "--resume")
    assert resumed.returncode == 0, (resumed.events[-1:], resumed.stderr[-2000:])
    warning = resumed.of("warning")[0]
    assert newest.name in warning["message"] and "damaged" in warning["message"]
    status = [e for e in resumed.of("status") if "resumed_from" in e["details"]]
    assert status[0]["details"]["resumed_from"] == int(intact.name[5:])  # newest intact one
    done = resumed.of("done")[0]
    assert done["step"] == 6 and Path(done["path"]).parent == crashed.path


def test_a_changed_data_split_is_refused(finished, tmp_path):
    project, run = copy_project(finished, tmp_path)
    crashed = crashed_copy(run)
    for split in ("validation_images=0", "validation_images=-1"):
        resumed = run_cli("train", str(project), "--resume", "--set", split)
        assert resumed.returncode == 2, resumed.events[-1]
        message = resumed.events[-1]["message"]
        assert "validation_images: 2 ->" in message and crashed.path.name in message
    ok = run_cli("train", str(project), "--resume", "--set", "sample_steps=5")
    assert ok.returncode == 0, ok.events[-1]  # output-only settings may change


def test_no_resume_point_in_the_newest_run_names_it_and_the_older_one(finished, tmp_path):
    project, run = copy_project(finished, tmp_path)
    crashed = crashed_copy(run)
    failed = RunDir(run.path.with_name(run.path.name + "-zz-failed"))  # newer, stopped at once
    failed.path.mkdir()
    shutil.copy(run.config, failed.config)
    failed.events.write_text('{"event": "error", "message": "out of memory"}\n')
    resumed = run_cli("train", str(project), "--resume")
    assert resumed.returncode == 2
    error = resumed.events[-1]
    assert failed.path.name in error["message"] and "no intact resume point" in error["message"]
    assert "settings changed" not in error["message"]  # no bogus comparison with another run
    assert f"--resume {crashed.path}" in error["hint"]
    older = run_cli("train", str(project), "--resume", str(crashed.path))
    assert older.returncode == 0 and older.of("done")[0]["step"] == 6
