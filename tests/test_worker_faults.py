"""Nothing lost when samples, validation or GPU memory fail (issue 13 item 2, issue 17 item 3),
progress while samples render (issue 14), and a GPU torch cannot use said out loud: through the
worker's CLI, with faults injected by tests/fault_worker.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_project, run_cli
from test_multi_gpu import run_worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fp16_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model stored in fp16, as most downloaded base models are."""
    import torch

    from conftest import load_pipe

    out = tmp_path_factory.mktemp("models") / "tiny-fp16"
    load_pipe(tiny_model).to(torch.float16).save_pretrained(out)
    return out


def test_fp16_base_model_trains_on_the_cpu_with_samples_and_validation(tmp_path, fp16_model):
    # 24 images: a validation set is held out; samples at each epoch end and the last step.
    project = make_project(tmp_path / "p", fp16_model, n_images=24, max_steps=3,
                           sample_every_n_epochs=1, sample_steps=4)
    run = run_cli("train", str(project))
    assert run.returncode == 0, run.stderr[-3000:]
    assert Path(run.of("done")[0]["path"]).is_file()
    assert run.of("sample") and run.of("validation")
    assert not run.of("warning")
    # Samples and validation report their own progress (the step and ETA froze while they ran).
    for phase, total in (("sampling", 4 * len(run.of("sample")[0]["paths"])), ("training", 2)):
        counts = [(s["details"]["done"], s["details"]["total"]) for s in run.of("status")
                  if s["phase"] == phase and "done" in s["details"]]
        assert counts and counts[-1] == (total, total), (phase, counts)


def test_a_failing_sample_becomes_a_warning_and_the_lora_is_saved(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, max_steps=4, sample_every_n_steps=2,
                           sample_every_n_epochs=0)
    run = run_worker("train", str(project), faults={"fail": "sample"})
    assert run.returncode == 0, run.stderr[-3000:]
    done = run.of("done")[0]
    assert done["step"] == 4 and Path(done["path"]).is_file()  # training went on after step 2
    messages = [w["message"] for w in run.of("warning")]
    assert [m.split(" (")[0] for m in messages] == [
        "Rendering samples failed at step 2", "Rendering samples failed at step 4"], messages
    names = [e["event"] + e.get("phase", "") for e in run.events]
    # The final LoRA is saved before the last step's samples are tried.
    assert names.index("statussaving") < len(names) - 1 - names[::-1].index("warning")


@pytest.mark.parametrize("place, settings, expected", [
    ("caching", {}, ("encoding the images for the cache", "resolution")),
    ("text", {"caption_dropout": 0.05}, ("encoding captions at step 1", "caption_dropout")),
])
def test_out_of_memory_before_a_step_names_the_setting_for_that_place(
        tmp_path, tiny_model, place, settings, expected):
    project = make_project(tmp_path / "p", tiny_model, sample_every_n_epochs=0, **settings)
    run = run_worker("train", str(project), faults={"oom": place})
    assert run.returncode == 1
    error = run.of("error")[0]
    message, field = expected
    assert message in error["message"] and error["field"] == field and field in error["fix"]
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("place, phrase", [("sample", "Rendering samples"),
                                           ("validation", "Measuring the validation loss")])
def test_out_of_memory_in_samples_or_validation_is_a_warning(tmp_path, tiny_model, place,
                                                             phrase):
    project = make_project(tmp_path / "p", tiny_model, n_images=24, max_steps=2,
                           sample_every_n_epochs=1, sample_steps=2)
    run = run_worker("train", str(project), faults={"oom": place})
    assert run.returncode == 0, run.stderr[-3000:]
    assert Path(run.of("done")[0]["path"]).is_file()
    warning = run.of("warning")[0]
    assert warning["message"].startswith(f"{phrase} ran out of GPU memory at step 2")
    assert "gradient checkpointing" in warning["hint"]  # memory_lever's advice


def test_a_gpu_torch_cannot_use_is_said_at_the_start(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, max_steps=1, sample_every_n_epochs=0)
    run = run_worker("train", str(project), faults={"gpu": "NVIDIA GeForce GTX 1080"})
    assert run.returncode == 0, run.stderr[-3000:]
    names = [e["event"] for e in run.events]
    first = run.of("warning")[0]
    assert "NVIDIA GeForce GTX 1080" in first["message"] and "CPU" in first["message"]
    assert names.index("warning") < names.index("progress")
