"""The GUI's pure-Python helpers in studio/ (no Qt): settings, workspace, captions, the dataset
doctor, run history, crash hints and LoRA delivery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio import settings
from studio.protocol import crash_hints
from studio.runs import deliver
from studio.runs import history as run_history
from studio.runs import workspace
from studio.dataset import captions, summary
from studio.config import TrainConfig
from studio.runs.project import Project, RunDir
from uihelpers import digests
from uifixtures import *  # noqa: F403 (pytest fixtures)


# --- settings ---------------------------------------------------------------------------------
def test_settings_round_trip_and_recent_lists(tmp_path):
    path = tmp_path / "settings.toml"
    s = settings.AppSettings()
    for n in range(15):
        s.remember_project(f"/p/{n}")
    s.remember_project("/p/3")  # re-opening moves it to the front, no duplicate
    s.remember_lora_folder("/comfy/models/loras")
    settings.save(s, path)
    loaded = settings.load(path)
    assert loaded.recent_projects[0] == "/p/3" and loaded.last_project == "/p/3"
    assert len(loaded.recent_projects) == settings.MAX_RECENT
    assert len(set(loaded.recent_projects)) == len(loaded.recent_projects)
    assert loaded.lora_folders == ["/comfy/models/loras"] and not loaded.warnings


@pytest.mark.parametrize("content", ["not = [valid toml", b"\xff\xfe\x00garbage"])
def test_a_broken_settings_file_gives_defaults_and_a_warning(tmp_path, content):
    path = tmp_path / "settings.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    loaded = settings.load(path)
    assert loaded.recent_projects == [] and len(loaded.warnings) == 1


def test_bad_values_fall_back_one_by_one(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('last_project = 42\nrecent_projects = ["/a", 3]\nlora_folders = ["/l"]\n'
                    'unknown_key = "ignored"\n')
    loaded = settings.load(path)
    assert loaded.last_project == "" and loaded.recent_projects == []
    assert loaded.lora_folders == ["/l"]  # the good value survives
    assert len(loaded.warnings) == 2


# --- workspace --------------------------------------------------------------------------------
def test_a_folder_of_images_becomes_a_project_that_points_at_it(art, studio_home):
    before = digests(art)
    project = workspace.open_folder(art, base_model="/models/sd15")
    assert project.root.parent == workspace.projects_dir()
    assert project.root.is_relative_to(studio_home)
    cfg = project.load_config()
    assert Path(cfg.dataset_dir) == art.resolve() and Path(cfg.dataset_dir).is_absolute()
    assert cfg.output_name == "my-art" and cfg.base_model == "/models/sd15"
    assert workspace.open_folder(art) == project  # dropping it again reopens the same project
    assert workspace.open_folder(project.root) == project  # so does the project folder itself
    assert digests(art) == before and not (art / "project.toml").exists()


def test_two_folders_with_the_same_name_get_two_projects(tmp_path):
    a = tmp_path / "a" / "style"
    b = tmp_path / "b" / "style"
    for folder in (a, b):
        folder.mkdir(parents=True)
        (folder / "x.png").write_bytes(b"")
    assert workspace.open_folder(a).root != workspace.open_folder(b).root


def test_folders_without_images_explain_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(workspace.WorkspaceError) as info:
        workspace.open_folder(tmp_path / "empty")
    assert ".png" in info.value.hint
    nested = tmp_path / "outer" / "inner"
    nested.mkdir(parents=True)
    (nested / "a.jpg").write_bytes(b"")
    with pytest.raises(workspace.WorkspaceError) as info:
        workspace.open_folder(tmp_path / "outer")
    assert "inner" in info.value.hint and "10_inner" in info.value.hint


def test_a_kohya_folder_opens_as_a_project_that_keeps_its_repeats(tmp_path):
    # Only `N_name` subfolders, as kohya's trainer and the worker read them: a project, not a
    # refusal; the dataset is the top folder so every subfolder keeps its repeat count.
    (tmp_path / "kohya" / "10_style").mkdir(parents=True)
    (tmp_path / "kohya" / "10_style" / "a.png").write_bytes(b"")
    project = workspace.open_folder(tmp_path / "kohya")
    assert Path(project.load_config().dataset_dir) == (tmp_path / "kohya").resolve()


# --- captions ---------------------------------------------------------------------------------
def test_caption_edits_are_undone_exactly(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    (tmp_path / "a.txt").write_text("old caption")
    change = captions.write(image, "new caption")
    assert (tmp_path / "a.txt").read_text() == "new caption"
    captions.revert([change])
    assert (tmp_path / "a.txt").read_text() == "old caption"
    assert captions.write(image, "old caption") is None  # unchanged: nothing written

    bare = tmp_path / "b.png"
    bare.write_bytes(b"png")
    created = captions.write(bare, "first caption")
    assert created.old is None and (tmp_path / "b.txt").read_text() == "first caption"
    captions.revert([created])  # undoing the creation removes only the caption file we made
    assert not (tmp_path / "b.txt").exists() and bare.read_bytes() == b"png"


def test_caption_sidecar_with_caption_extension_is_kept(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    (tmp_path / "a.caption").write_text("\ufeffwith bom")
    assert captions.read(image) == "with bom"
    captions.write(image, "edited")
    assert (tmp_path / "a.caption").read_text() == "edited" and not (tmp_path / "a.txt").exists()


def test_bulk_edits():
    assert captions.add_trigger("red, circle", "zxq") == "zxq, red, circle"
    assert captions.add_trigger("zxq, red", "zxq") == "zxq, red"
    assert captions.add_trigger("", "zxq") == "zxq"
    swap = captions.replacer("cat", "dog", whole_words=True)
    assert swap("cat, category, Cat") == "dog, category, Cat"
    remove = captions.replacer("flat colours", "")
    assert remove("soft shapes, flat colours, warm light") == "soft shapes, warm light"
    assert captions.replacer("X", "y", match_case=False)("x x") == "y y"


def test_bulk_writes_only_changed_captions(tmp_path):
    images = []
    for name, text in (("a", "zxq, red"), ("b", "blue")):
        (tmp_path / f"{name}.png").write_bytes(b"")
        (tmp_path / f"{name}.txt").write_text(text)
        images.append(tmp_path / f"{name}.png")
    changes = captions.bulk(images, lambda c: captions.add_trigger(c, "zxq"))
    assert [c.image.name for c in changes] == ["b.png"]
    assert captions.preview(images, lambda c: captions.add_trigger(c, "zxq")) == 0


def test_metadata_jsonl_captions_are_edited_in_place(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "b.png").write_bytes(b"png")
    original = ('{"file_name": "a.png", "text": "old a", "score": 3}\r\n'
                'not json, kept as it is\r\n'
                '{"file_name": "b.png", "caption": "old b"}\r\n')
    meta = tmp_path / "metadata.jsonl"
    meta.write_bytes(original.encode())
    assert captions.read(tmp_path / "a.png") == "old a"
    assert captions.read(tmp_path / "b.png") == "old b"  # the "caption" key also counts
    change = captions.write(tmp_path / "b.png", "new b, caf\xe9")
    assert change.path == meta and not (tmp_path / "b.txt").exists()
    lines = meta.read_bytes().decode().split("\r\n")
    assert lines[:2] == original.split("\r\n")[:2]  # other lines byte for byte
    assert json.loads(lines[2]) == {"file_name": "b.png", "caption": "new b, caf\xe9"}
    captions.revert([change])
    assert meta.read_bytes().decode() == original
    # A sidecar file, once there, wins over the metadata row (the trainer's rule).
    (tmp_path / "a.txt").write_text("sidecar a")
    assert captions.read(tmp_path / "a.png") == "sidecar a"


# --- dataset doctor ---------------------------------------------------------------------------
def test_the_dataset_view_arranges_the_doctors_findings(art):
    report = summary.examine(art, resolution=512)
    kinds = {(f.path.name, f.code) for f in report.findings}
    assert ("art_001_copy.jpg", "duplicate") in kinds
    assert ("art_002.jpg", "caption_missing") in kinds
    assert ("small_sketch.png", "too_small") in kinds
    assert [f.path.name for f in report.blocking()] == ["notes.png"]
    assert report.captions[art / "art_002.jpg"] == ""
    assert len(report.used()) == len(report.images) - 1 == 10  # notes.png cannot be read
    report.excluded = frozenset({"notes.png", "art_000.jpg"})
    assert report.blocking() == [] and len(report.used()) == 9
    numbers = summary.summarize(report, TrainConfig())
    assert (numbers.total, numbers.used, numbers.excluded) == (11, 9, 2)
    assert numbers.caption_style == "tags" and numbers.small == 1 and numbers.min_side == 320
    assert sum(numbers.buckets.values()) == 9
    assert summary.shows("duplicates", report.for_path(art / "art_001_copy.jpg"), False)
    assert not summary.shows("errors", report.for_path(art / "art_001_copy.jpg"), False)


def test_caption_edits_update_the_report_without_a_rescan(art):
    report = summary.examine(art)
    image = art / "art_002.jpg"
    summary.update_caption(report, image, "now captioned")
    assert report.captions[image] == "now captioned"
    assert not any(f.code == "caption_missing" for f in report.for_path(image))
    summary.update_caption(report, image, "  ")
    assert [f.code for f in report.for_path(image)] == ["caption_empty"]


# --- run history, crash hints, delivery -------------------------------------------------------
def test_run_history_reads_outcomes(tmp_path):
    project = Project(tmp_path)
    run = project.new_run()
    run.config.write_text("")
    adapter = run.adapter("x")
    adapter.write_bytes(b"lora")
    events = [{"event": "progress", "step": 3, "total": 10},
              {"event": "done", "path": str(adapter), "stopped": True, "step": 3}]
    run.events.write_text("\n".join(json.dumps(e) for e in events) + "\n{truncated")
    summary = run_history.history(project)[0]
    assert (summary.status, summary.step, summary.total, summary.adapter) == \
        ("stopped", 3, 10, adapter)
    assert run_history.summarize(RunDir(tmp_path / "missing")).status == "incomplete"


def test_crash_hints():
    assert "memory" in crash_hints.hint("torch.OutOfMemoryError: CUDA out of memory", 1, False)
    assert "bootstrap" in crash_hints.hint("ModuleNotFoundError: No module named 'torch'", 1,
                                           False)
    assert "RAM" in crash_hints.hint("", -9, True)
    assert "log" in crash_hints.hint("something odd", 3, False)


def test_copy_lora_is_atomic_and_brings_its_sidecar(tmp_path):
    adapter = tmp_path / "run" / "style.safetensors"
    adapter.parent.mkdir()
    adapter.write_bytes(b"weights")
    adapter.with_suffix(".json").write_text("{}")
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    target = deliver.lora_folder_for(comfy)
    assert target == comfy / "models" / "loras"
    copies = deliver.copy_lora(adapter, target)
    assert [c.name for c in copies] == ["style.safetensors", "style.json"]
    assert (target / "style.safetensors").read_bytes() == b"weights"
    assert deliver.conflicts(adapter, target) == copies
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no temporary left



def test_a_new_resolution_rechecks_sizes_without_a_rescan(art):
    report = summary.examine(art, resolution=512)
    summary.update_resolution(report, 700)
    rescanned = summary.examine(art, resolution=700)
    assert {f.path for f in report.findings if f.code == "too_small"} == \
        {f.path for f in rescanned.findings if f.code == "too_small"}
    assert len([f for f in report.findings if f.code == "too_small"]) > 1


def test_run_history_reads_only_the_end_of_long_event_files(tmp_path):
    project = Project(tmp_path)
    run = project.new_run()
    run.config.write_text("")
    progress = "\n".join(json.dumps({"event": "progress", "step": i, "total": 50_000})
                         for i in range(1, 50_001))
    run.events.write_text(progress + "\n" + json.dumps({"event": "error", "message": "boom"}))
    assert run.events.stat().st_size > 10 * run_history.TAIL_BYTES
    summary = run_history.summarize(run)
    assert (summary.status, summary.step, summary.message) == ("failed", 50_000, "boom")


def test_reopening_the_demo_keeps_the_artists_settings(tmp_path):
    from studio import config
    from studio.runs import demo

    project = demo.create_demo_project(tmp_path / "demo")
    cfg = project.load_config()
    project.save_config(config.from_dict({"max_steps": 600, "rank": 8}, cfg))
    again = demo.create_demo_project(tmp_path / "demo").load_config()
    assert (again.max_steps, again.rank) == (600, 8)  # was reset to the preset's 150
    # A moved checkout: the stale bundled paths point back at the assets, the rest is kept.
    project.save_config(config.from_dict({"base_model": str(tmp_path / "gone" / "pocket-model")},
                                         again))
    moved = demo.create_demo_project(tmp_path / "demo").load_config()
    assert moved.base_model == str(demo.POCKET_MODEL) and moved.max_steps == 600
