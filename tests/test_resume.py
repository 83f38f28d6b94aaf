"""Resume that always works, and nothing lost to kills, full disks or diverging losses (issue 8)."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, make_project, parse_events, run_cli, worker_env
from studio import atomic, dataset
from studio.machine import diskspace
from studio.runs.project import Project, RunDir

pytestmark = pytest.mark.slow

SETTINGS = dict(max_steps=200, batch_size=2, save_dtype="fp32", sample_every_n_epochs=0,
                learning_rate=1e-2)


def start(project: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training", "train", str(project), *extra],
                            cwd=ROOT, env=worker_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def read_until(proc: subprocess.Popen, predicate) -> list[dict]:
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if predicate(events[-1]):
            return events
    raise AssertionError(f"worker ended first: {events[-3:]}")


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_model):
    straight = make_project(tmp_path / "a", tiny_model, **SETTINGS)
    broken = make_project(tmp_path / "b", tiny_model, **SETTINGS)
    reference = run_cli("train", str(straight))
    assert reference.returncode == 0

    proc = start(broken, "--control-stdin")
    read_until(proc, lambda e: e["event"] == "progress" and e["step"] >= 3)
    proc.stdin.write('{"cmd": "stop"}\n')
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=120)
    stopped = parse_events(out)[-1]
    assert stopped["event"] == "done" and stopped["stopped"] and stopped["step"] < 200

    resumed = run_cli("train", str(broken), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    status = [e for e in resumed.of("status") if "resumed_from" in e["details"]]
    assert status and status[0]["details"]["resumed_from"] == stopped["step"]
    assert resumed.of("progress")[0]["step"] > stopped["step"]  # no step is trained twice
    done = resumed.of("done")[0]
    assert done["step"] == 200 and not done["stopped"]
    assert Path(done["path"]).parent == Path(stopped["path"]).parent  # same run folder

    a, b = load_file(reference.of("done")[0]["path"]), load_file(done["path"])
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_sigkill_leaves_only_complete_outputs_and_resume_finishes(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, **{**SETTINGS, "max_steps": 60,
                                                          "save_every_n_steps": 2})
    proc = start(project)
    read_until(proc, lambda e: e["event"] == "lora_saved" and e["step"] >= 4)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    run = RunDir(next(Path(project / "runs").iterdir()))
    complete = sorted(run.resume.glob("step-*"))
    assert complete, list(run.resume.iterdir())
    from training import resume
    for point in complete:
        resume.verify(point)  # every visible resume point reads back whole
    loras = list(run.loras.glob("*.safetensors"))
    assert loras and not list(run.path.glob("checkpoints"))  # LoRA files and resume points apart
    for lora in loras:
        assert load_file(lora)  # every exported LoRA loads
    assert not list(run.loras.glob("*.tmp"))  # atomic_path never leaves temp files like outputs

    resumed = run_cli("train", str(project), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.of("done")[0]["step"] == 60


def test_resume_refuses_changed_settings_or_data_and_says_why(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, **{**SETTINGS, "max_steps": 3,
                                                          "resume_point_every_minutes": 0.0})
    proc = start(project, "--control-stdin")
    read_until(proc, lambda e: e["event"] == "progress")
    proc.stdin.write('{"cmd": "stop"}\n')
    proc.stdin.flush()
    proc.communicate(timeout=120)

    changed = run_cli("train", str(project), "--resume", "--set", "rank=8")
    assert changed.returncode == 2 and "rank: 4 -> 8" in changed.events[-1]["message"]

    shutil.copy(project / "dataset" / "000.png", project / "dataset" / "new.png")
    (project / "dataset" / "new.txt").write_text("a copy")
    data_changed = run_cli("train", str(project), "--resume")
    assert data_changed.returncode == 2 and "dataset changed" in data_changed.events[-1]["message"]
    (project / "dataset" / "new.png").unlink()
    (project / "dataset" / "new.txt").unlink()

    # Last: it finishes the run, which then is never reopened (tests/test_resume_rules.py).
    ok_change = run_cli("train", str(project), "--resume", "--set", "sample_steps=5")
    assert ok_change.returncode == 0  # sampling settings don't change what is trained


def test_nothing_to_resume(project):
    run = run_cli("train", str(project), "--resume")
    assert run.returncode == 2 and "Nothing to resume" in run.events[-1]["message"]


def test_full_disk_is_named_and_earlier_files_survive(tmp_path, monkeypatch):
    target = tmp_path / "lora.safetensors"
    target.write_bytes(b"earlier, complete file")
    monkeypatch.setattr(diskspace.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(diskspace.DiskFull) as err:
        diskspace.ensure_free(tmp_path, 5_000_000)
    # The need is the write's own size; the safety margin is said apart, never counted as need,
    # and a run without a resume point is not told to resume.
    message = str(err.value)
    assert "Not enough space on the disk" in message and "4.8 MB needed plus 64" in message
    assert err.value.needed == 5_000_000 and "start the run again" in err.value.hint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(diskspace.DiskFull):
        with atomic.atomic_open(target, "wb") as fh:
            fh.write(b"partial")
            full()
    assert target.read_bytes() == b"earlier, complete file"
    assert list(tmp_path.iterdir()) == [target]


def test_nan_losses_are_skipped_then_the_run_stops_with_advice(tmp_path, tiny_model, monkeypatch):
    from training import loss as loss_module, train as train_module
    from training.events import Control, EventSink

    torch.set_num_threads(1)
    project = Project(make_project(tmp_path / "p", tiny_model, **SETTINGS))
    real = loss_module.diffusion_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 else loss
    monkeypatch.setattr(loss_module, "diffusion_loss", sometimes_nan)
    run = project.new_run()
    sink = EventSink(claim_stdout=False, stdout_events=False)
    sink.attach_file(run.events)
    cfg = project.load_config()
    items = dataset.load(project.resolve(cfg.dataset_dir), cfg.exclude_images, cfg.repeats)
    with pytest.raises(train_module.TrainingDiverged):
        train_module.train(project, cfg, run, items, sink, Control(signals=False))
    sink.close_file()
    events = [json.loads(line) for line in run.events.read_text().splitlines()]
    assert sum(e["event"] == "warning" for e in events) == train_module.MAX_BAD_STEPS
    resume_points = list(run.resume.glob("step-*"))
    assert [p.name for p in resume_points] == ["step-000003"]  # the last good step
    lora = load_file(resume_points[0] / "lora.safetensors")
    assert all(torch.isfinite(t).all() for t in lora.values())
