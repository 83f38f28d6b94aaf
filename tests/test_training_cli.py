"""The training worker through its real entry point: `python -m training train` in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import ROOT, make_project, parse_events, run_cli, worker_env

pytestmark = pytest.mark.slow


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def only_run(project: Path) -> Path:
    runs = [p for p in (project / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_train_writes_a_kohya_lora_and_reports_every_phase(project):
    dataset_before = folder_digest(project / "dataset")
    run = run_cli("train", str(project))
    assert run.returncode == 0, run.stderr

    names = [e["event"] for e in run.events]
    assert names[0] == "hello" and names[-1] == "done"
    phases = [e["phase"] for e in run.of("status")]
    assert list(dict.fromkeys(phases)) == ["loading_model", "caching", "training", "sampling",
                                           "saving"]
    # The final LoRA is saved before the last step's samples, which may fail (issue 13 item 2).
    saved_at = len(phases) - 1 - phases[::-1].index("saving")
    assert set(phases[saved_at + 1:]) == {"sampling"} and names[-2:] == ["sample", "done"]
    # Samples after the first epoch (3 steps) and at the end, each prompt with and without the
    # trigger word, rendered by the Generate tab's code with the A1111 parameters inside.
    samples = run.of("sample")
    assert [s["step"] for s in samples] == [3, 4]
    assert samples[-1]["prompts"][0].startswith("zxq, ") and \
        not samples[-1]["prompts"][1].startswith("zxq")
    from PIL import Image

    from studio import infotext
    params = infotext.parse(Image.open(samples[-1]["paths"][0]).text["parameters"])
    assert params.loras == (("tiny-style", 1.0),) and params.seed == 7
    progress = run.of("progress")
    assert progress[-1]["step"] == progress[-1]["total"] == 4  # the last step is always sent
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress)
    assert all(p["loss"] > 0 and p["lr"] > 0 for p in progress)
    done = run.of("done")[0]
    assert done["stopped"] is False and done["step"] == 4

    run_dir = only_run(project)
    adapter = Path(done["path"])
    assert adapter == run_dir / "tiny-style.safetensors"
    assert (run_dir / "config.toml").is_file() and (run_dir / "log.txt").stat().st_size > 0
    recorded = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in recorded] == names[1:]  # all but hello (sent before the run existed)
    assert stat.S_IMODE(adapter.stat().st_mode) == 0o644

    tensors = load_file(adapter)
    downs = [k for k in tensors if k.endswith(".lora_down.weight")]
    # 4 transformer blocks (down 1, mid, up 2) x attn1/attn2 x to_q/k/v/out.0
    assert len(downs) == 4 * 2 * 4
    assert all(k.startswith("lora_unet_") for k in tensors)
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" \
        in tensors
    alphas = {float(v) for k, v in tensors.items() if k.endswith(".alpha")}
    assert alphas == {2.0}  # the configured alpha, not the rank (4)
    with safe_open(adapter, "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_network_dim"] == "4" and float(meta["ss_network_alpha"]) == 2.0
    assert meta["ss_output_name"] == "tiny-style" and meta["modelspec.trigger_phrase"] == "zxq"
    assert folder_digest(project / "dataset") == dataset_before  # never modified


def test_rerun_is_bitwise_identical_and_encodes_nothing(project):
    first = run_cli("train", str(project))
    second = run_cli("train", str(project))
    assert first.returncode == second.returncode == 0, second.stderr
    ready = [e for e in first.of("status") if "latents_encoded" in e["details"]][0]["details"]
    assert ready["latents_encoded"] == 6 and ready["latents_reused"] == 0
    ready = [e for e in second.of("status") if "latents_encoded" in e["details"]][0]["details"]
    assert ready["latents_encoded"] == 0 and ready["latents_reused"] == 6
    assert ready["texts_encoded"] == 0
    a, b = (load_file(r.of("done")[0]["path"]) for r in (first, second))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)


def start_worker(project: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training", "train", str(project), *extra],
                            cwd=ROOT, env=worker_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_progress(proc: subprocess.Popen) -> list[dict]:
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "progress":
            return seen
        assert seen[-1]["event"] != "error", seen[-1]
    raise AssertionError(f"no progress event; stderr: {proc.stderr.read()}")


def finish(proc: subprocess.Popen, seen: list[dict]) -> tuple[int, list[dict]]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, seen + parse_events(out)


@pytest.mark.parametrize("how", ["stop-command", "stdin-closed", "sigterm"])
def test_graceful_stop_saves_the_adapter(tmp_path, tiny_model, how):
    project = make_project(tmp_path / "p", tiny_model, max_steps=100_000)
    proc = start_worker(project, *(["--control-stdin"] if how != "sigterm" else []))
    seen = wait_for_progress(proc)
    if how == "stop-command":
        proc.stdin.write('{"cmd": "stop"}\n')
        proc.stdin.flush()
    elif how == "stdin-closed":
        proc.stdin.close()  # the GUI died
        proc.stdin = None  # (so communicate() does not flush the closed pipe)
    else:
        proc.send_signal(signal.SIGTERM)
    code, events = finish(proc, seen)
    assert code == 0
    done = events[-1]
    assert done["event"] == "done" and done["stopped"] is True
    assert 0 < done["step"] < 100_000
    assert len(load_file(done["path"])) == 32 * 3


def test_plain_cli_ignores_stdin_eof(project):
    # No --control-stdin: CI and nohup give an empty stdin, which must not stop the run.
    run = run_cli("train", str(project), stdin=subprocess.DEVNULL)
    assert run.returncode == 0
    assert run.of("done")[0]["stopped"] is False and run.of("done")[0]["step"] == 4


def test_a_person_at_a_terminal_sees_a_progress_bar_not_json(project):
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "training", "train", str(project)], cwd=ROOT,
                            env=worker_env(), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert "step 4/4" in screen and "[####" in screen
    assert '{"event"' not in screen
    assert "Done:" in screen


def test_runs_under_accelerate_launch(project):
    # accelerate exports OMP_NUM_THREADS=2 when unset; the worker sets its own thread count.
    env = {k: v for k, v in worker_env().items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "training", "train", str(project)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = parse_events(proc.stdout)
    assert events[-1]["event"] == "done" and Path(events[-1]["path"]).is_file()
    assert "1 CPU thread" in proc.stderr
