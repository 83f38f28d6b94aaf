"""Multi-GPU training (issue 17 items 4, 5, 6, 10b), reproduced on the CPU: two processes under
`torchrun`, DDP over gloo (ACCELERATE_USE_CPU), the tiny SD1.5 and SDXL models."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from conftest import ROOT, CliRun, make_project, parse_events, worker_env

pytestmark = pytest.mark.slow
WORKER = str(ROOT / "tests" / "fault_worker.py")


def run_worker(*args: str, faults: dict | None = None, nproc: int = 1,
               timeout: float = 150) -> CliRun:
    """`python -m training ARGS` (through tests/fault_worker.py), on `nproc` CPU processes."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    env = dict(worker_env(), ACCELERATE_USE_CPU="true",
               LORA_STUDIO_FAULTS=json.dumps(faults or {}))
    proc = subprocess.Popen([*launcher, WORKER, *args], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in a session of its own: kill them one by one, by id, or a
        # hung rank outlives its launcher and holds the output pipe open.
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        out, err = proc.communicate()
        # The last events say how far rank 0 got (the log lines alone stop at model loading).
        pytest.fail(f"training hung (killed after {timeout} s):\n{err[-3000:]}\n"
                    f"last events:\n{out[-1500:]}")
    return CliRun(proc.returncode, parse_events(out), err)


def records(folder: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]


def test_lr_at_each_step_equals_the_single_process_run(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, max_steps=6, lr_scheduler="linear",
                           sample_every_n_epochs=0)
    lrs = {}
    for nproc in (1, 2):
        rec = tmp_path / f"rec{nproc}"
        rec.mkdir()
        run = run_worker("train", str(project), faults={"record": str(rec)}, nproc=nproc)
        assert run.returncode == 0, run.stderr[-3000:]
        lrs[nproc] = [r["lr"][0] for r in records(rec, 0)]
    assert len(lrs[1]) == 6
    # The LR each update used, by global step: 2 processes follow the same schedule (it ran
    # world times too fast: 0 from step 4 of 6).
    assert lrs[2] == pytest.approx(lrs[1])


def test_sdxl_text_encoder_training_runs_4_steps_on_2_processes(tmp_path, tiny_sdxl):
    project = make_project(tmp_path / "p", tiny_sdxl, max_steps=4, train_text_encoder=True,
                           text_encoder_lr=1e-2, sample_every_n_epochs=0, save_dtype="fp32")
    run = run_worker("train", str(project), nproc=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.of("done")[0]["step"] == 4
    tensors = load_file(run.of("done")[0]["path"])
    te1 = {k for k in tensors if k.startswith("lora_te1_")}
    te2 = {k for k in tensors if k.startswith("lora_te2_")}
    assert te1 and te2
    # The first encoder's last layer feeds nothing the UNet sees (it reads hidden_states[-2]):
    # it has no LoRA; the second encoder's last layer feeds the pooled embedding and has one.
    layers = 2  # tiny_model.build_sdxl's text encoders
    last = f"_encoder_layers_{layers - 1}_"
    assert not any(last in k for k in te1)
    assert any(last in k for k in te2)
    assert any("_encoder_layers_0_" in k for k in te1)
    ups = [v for k, v in tensors.items() if k.startswith("lora_te1_") and "lora_up" in k]
    assert any(float(v.abs().max()) > 0 for v in ups)  # the first encoder trained


def test_nan_on_one_rank_is_skipped_on_every_rank(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, max_steps=4, sample_every_n_epochs=0,
                           save_dtype="fp32")
    rec = tmp_path / "rec"
    rec.mkdir()
    run = run_worker("train", str(project), faults={"record": str(rec),
                                                    "nan": {"rank": 1, "call": 2}}, nproc=2)
    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [w["message"] for w in run.of("warning")]
    assert any("Step 2: the loss is not finite" in w for w in warnings), warnings
    assert run.of("done")[0]["step"] == 4  # the skipped step was trained again
    assert len(records(rec, 0)) == len(records(rec, 1)) == 5  # both ranks skipped it
    for key, value in load_file(run.of("done")[0]["path"]).items():
        assert all(math.isfinite(x) for x in value.flatten().tolist()), key


def test_resumed_ranks_draw_their_own_noise(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, max_steps=4, save_every_n_steps=2,
                           sample_every_n_epochs=0)
    whole = tmp_path / "whole"
    whole.mkdir()
    run = run_worker("train", str(project), faults={"record": str(whole)}, nproc=2)
    assert run.returncode == 0, run.stderr[-3000:]
    point = Path(run.of("status")[0]["details"]["run_dir"]) / "resume" / "step-000002"
    # Resume from step 2 in a run folder of its own (the first run has finished).
    copy = tmp_path / "p" / "runs" / "resumed" / "resume" / point.name
    shutil.copytree(point, copy)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    run = run_worker("train", str(project), "--resume", str(copy),
                     faults={"record": str(resumed)}, nproc=2)
    assert run.returncode == 0, run.stderr[-3000:]
    draws = {r: [x["draw"] for x in records(resumed, r)] for r in (0, 1)}
    assert draws[0] != draws[1]  # every rank restored its own generator
    for r in (0, 1):  # and continued exactly where it stopped
        assert draws[r] == [x["draw"] for x in records(whole, r)][2:]


def test_out_of_memory_on_rank_0_while_caching_ends_every_rank(tmp_path, tiny_model):
    """Rank 0 caches first while the others wait at a barrier (train.cache,
    accelerator.main_process_first); when it runs out of memory there, the launcher ends the
    waiting ranks (torchrun stops the group when one worker fails): the run ends at once with
    rank 0's error and its lever, nothing hangs."""
    project = make_project(tmp_path / "p", tiny_model, max_steps=4, sample_every_n_epochs=0)
    run = run_worker("train", str(project), faults={"oom": "caching"}, nproc=2, timeout=120)
    assert run.returncode == 1
    error = run.of("error")[0]
    assert "ran out of memory while encoding the images" in error["message"]
    assert error["field"] == "resolution" and "Lower the resolution" in error["hint"]
    assert not run.of("done")
