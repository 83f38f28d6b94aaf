"""A full disk at the start of a run is an `error` event with the disk's name, never a traceback
or an empty run folder; a log file that can no longer be written is said once, never as
logging's "--- Logging error ---" tracebacks (issue 13, item 7). Writes fail through
tests/faults/sitecustomize.py, as on a full disk: files open, their writes get ENOSPC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, CliRun, make_project, parse_events, worker_env

FAULTS = Path(__file__).parent / "faults"


def run_full(full: list[Path], *args: str) -> CliRun:
    env = dict(worker_env(), LORA_STUDIO_TEST_ENOSPC=os.pathsep.join(map(str, full)),
               PYTHONPATH=os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    return CliRun(proc.returncode, parse_events(proc.stdout), proc.stderr)


def test_full_disk_at_the_start_is_an_error_event_and_leaves_no_run_folder(tmp_path):
    project = make_project(tmp_path / "p", tmp_path / "no-model-needed", n_images=3)
    run = run_full([project / "runs"], "train", str(project))
    assert run.returncode == 1, run.stderr[-2000:]
    assert [e["event"] for e in run.events] == ["hello", "error"]
    error = run.events[-1]
    assert error["message"].startswith("Not enough space on the disk"), error
    assert "start the run again" in error["hint"] and "resume" not in error["hint"]
    assert "Traceback" not in run.stderr
    assert not (project / "runs").exists()  # no empty run folder left behind


@pytest.mark.slow
def test_a_log_file_that_cannot_be_written_is_said_once(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, max_steps=2, sample_every_n_epochs=0)
    run_dir = tmp_path / "run"
    run = run_full([run_dir / "log.txt"], "train", str(project), "--run-dir", str(run_dir))
    assert run.returncode == 0, (run.events[-1:], run.stderr[-2000:])
    assert "--- Logging error ---" not in run.stderr and "Traceback" not in run.stderr
    assert run.stderr.count("can no longer be written") == 1
    assert run.of("done") and (run_dir / "tiny-style.safetensors").is_file()
