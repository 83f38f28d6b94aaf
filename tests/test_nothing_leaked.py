"""No file outside the dataset folder is ever read into training or its outputs (issue 13, item
1): captions, images, kohya folders and metadata.jsonl linked out of the dataset are refused by
`check` and `train` alike, and a run next to harmless links carries none of the outside text in
its LoRA metadata, sample PNGs, events or log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_project, run_cli
from training.demo import draw_shapes

SECRET = "zq-private-7f3a"  # the outside files' text: it must turn up nowhere


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A folder outside the project: a private text, and captioned pictures saying it."""
    out = tmp_path / "elsewhere"
    draw_shapes(out / "3_ext", 2, seed=5)
    for caption in (out / "3_ext").glob("*.txt"):
        caption.write_text(f"{SECRET}, a picture")
    (out / "secret.txt").write_text(SECRET)
    (out / "metadata.jsonl").write_text(json.dumps({"file_name": "000.png", "text": SECRET}))
    return out


LINKS = {  # name in the dataset -> target in `elsewhere`
    "caption": ("000.txt", "secret.txt"), "image": ("009.png", "3_ext/000.png"),
    "folder": ("3_ext", "3_ext"), "metadata": ("metadata.jsonl", "metadata.jsonl"),
}


@pytest.mark.parametrize("kind", LINKS)
def test_links_out_of_the_dataset_are_refused_by_check_and_train_alike(tmp_path, elsewhere,
                                                                       kind):
    project = make_project(tmp_path / "p", tmp_path / "no-model-needed", n_images=3)
    name, target = LINKS[kind]
    link = project / "dataset" / name
    if kind == "caption":
        link.unlink()
    link.symlink_to(elsewhere / target)

    check = run_cli("check", str(project), "--json")  # one JSON line: the report
    train = run_cli("train", str(project))
    assert check.returncode == 2 and train.returncode == 2, (check.stderr, train.events[-1:])
    blocking = check.events[0]["doctor"]["blocking"]
    assert [f["code"] for f in blocking] == ["symlink_outside"], blocking
    error = train.events[-1]
    assert error["event"] == "error" and "outside the dataset folder" in error["message"]
    assert name in error["message"] and error["field"].endswith(name)
    assert not (project / "runs").exists()  # refused before anything was written
    for text in (check.stderr, train.stderr, json.dumps(train.events)):
        assert SECRET not in text


@pytest.mark.slow
def test_a_run_beside_harmless_links_carries_nothing_from_outside(tmp_path, tiny_model,
                                                                  elsewhere):
    # Links that do not block: an excluded image linked outside, and a linked folder that is not
    # a kohya `N_name` folder (so not part of the dataset). Neither may be read.
    project = make_project(tmp_path / "p", tiny_model, max_steps=4,
                           exclude_images=["009.png"], sample_every_n_epochs=1,
                           validation_images=2)
    (project / "dataset" / "009.png").symlink_to(elsewhere / "3_ext" / "000.png")
    shutil.copy(elsewhere / "secret.txt", tmp_path / "secret-copy.txt")
    (project / "dataset" / "ext").symlink_to(elsewhere / "3_ext")
    run = run_cli("train", str(project))
    assert run.returncode == 0, (run.events[-1:], run.stderr[-2000:])
    assert run.of("sample"), "samples were rendered (their PNG text is searched too)"
    written = [p for p in (project / "runs").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in written)
    assert any(p.suffix == ".png" for p in written) and any(p.name == "events.jsonl"
                                                            for p in written)
    for path in written:  # LoRA metadata headers, sample PNG text chunks, events, log, sidecar
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in json.dumps(run.events) + run.stderr
