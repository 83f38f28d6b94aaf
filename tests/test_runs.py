"""Run folders: LoRA files in loras/, resume points in resume/, and runs made before that split
(one checkpoints/ folder for both) still listed, offered in Generate and resumable."""

from __future__ import annotations

import json

from studio import config
from studio.runs import loras as lora_catalog
from studio.runs import history as run_history
from studio.runs.project import Project, RunDir


def make(run: RunDir, loras: str, points: str, steps=(2, 4)) -> None:
    """A stopped run with a LoRA file and a resume point (stub) at each of `steps`."""
    run.path.mkdir(parents=True)
    run.config.write_text(config.to_toml(config.TrainConfig(output_name="ink")))
    run.events.write_text(json.dumps({"event": "done", "path": "", "stopped": True,
                                      "step": steps[-1]}) + "\n")
    for step in steps:
        lora = run.path / loras / f"ink-step{step:06d}.safetensors"
        lora.parent.mkdir(exist_ok=True)
        lora.write_bytes(b"\2\0\0\0\0\0\0\0{}")  # a header-only safetensors
        point = run.path / points / f"step-{step:06d}"
        point.mkdir(parents=True)
        (point / "state.json").write_text("{}")


def test_new_and_old_layouts_list_the_same(tmp_path):
    project = Project(tmp_path)
    new, old = RunDir(project.runs / "20260102-000000"), RunDir(project.runs / "20260101-000000")
    make(new, "loras", "resume")
    make(old, "checkpoints", "checkpoints")
    for run in (new, old):
        assert [p.name for p in run.resume_points()] == ["step-000002", "step-000004"]
        assert [p.name for p in run.lora_files()] == ["ink-step000002.safetensors",
                                                      "ink-step000004.safetensors"]
        assert run_history.summarize(run).resumable
        assert [f.step for f in lora_catalog.run_loras(run).files] == [4, 2]
    assert not (new.path / "checkpoints").exists()


def test_an_old_runs_resume_point_is_found_and_accepted(tmp_path):
    import random

    import torch

    from training import resume

    cfg = config.TrainConfig()
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    pos = resume.Position(3, 0, [[0, 1]], torch.Generator().get_state(),
                          random.Random(0).getstate())
    old = RunDir(Project(tmp_path).runs / "20260101-000000")
    written = resume.save(old.legacy, {"w": weight}, optimizer, schedule, pos, cfg, "m", keep=2)
    # As schema 1 wrote it: its settings fingerprint says schema 1 (the resume-point keys were
    # left out under their old names).
    state = json.loads((written / "state.json").read_text())
    state["config"]["schema"] = 1
    (written / "state.json").write_text(json.dumps(state))
    assert resume.latest([old.path]) == written == old.path / "checkpoints" / "step-000003"
    point = resume.open_point(written, cfg, "m")  # not refused as "the settings changed"
    assert point.state["step"] == 3
