"""Windows' MAX_PATH: a run whose files would pass the path limit is refused before it starts,
naming the path and what to do (studio/paths.py); only where the system has such a limit."""

from __future__ import annotations

from pathlib import Path, PureWindowsPath

import pytest

from conftest import make_project, run_cli
from studio import paths
from studio.errors import UserError

DEEP = PureWindowsPath("C:/Users/Artist/Documents/" + "/".join(["Client Work 2026"] * 10) + "/runs")


def test_a_deep_project_on_windows_without_long_paths_is_refused_up_front():
    limit = paths.path_limit(platform="win32", long_paths=False)
    assert limit == 259
    with pytest.raises(UserError) as refused:
        paths.check_run_paths(DEEP, "my-ink-style", limit, sep="\\")
    error = refused.value
    assert error.field == "output_name"
    assert "\\loras\\.my-ink-style-step0000000.safetensors" in str(error)
    assert "Move the project" in error.hint and "shorten Output name" in error.hint
    # The same project where the system allows long paths, and a shallow one, are fine.
    assert paths.path_limit(platform="win32", long_paths=True) is None
    assert paths.path_limit(platform="linux") is None
    paths.check_run_paths(PureWindowsPath("C:/LoRA/ink/runs"), "my-ink-style", limit, sep="\\")


def test_the_cli_refuses_a_run_past_the_limit_and_writes_nothing(tmp_path, monkeypatch):
    project = make_project(tmp_path / "p", tmp_path / "no-model-needed", n_images=3,
                           output_name="a-rather-long-output-name-for-my-style")
    longest = paths.path_length(paths.longest_run_path(project.resolve() / "runs",
                                                       "a-rather-long-output-name-for-my-style"))
    monkeypatch.setenv(paths.PATH_LIMIT_ENV, str(longest - 1))
    run = run_cli("train", str(project))
    assert run.returncode == 2, run.stderr
    error = run.events[-1]
    assert error["event"] == "error" and error["field"] == "output_name"
    assert str(Path(project.resolve() / "runs")) in error["message"] and "Move the project" in \
        error["hint"]
    assert not (project / "runs").exists()
    checked = run_cli("check", str(project))  # `check` says the same before anything is trained
    assert checked.returncode == 2 and "Move the project" in checked.stderr, checked.stderr
    monkeypatch.setenv(paths.PATH_LIMIT_ENV, str(longest))
    assert run_cli("train", str(project)).events[-1]["field"] == "base_model"  # past the check
