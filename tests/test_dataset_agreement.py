"""The Dataset tab and the worker agree on every dataset (issue 12): the images used, their repeats,
their captions, what blocks training, and the number of steps.

The GUI side is what the window holds (studio.dataset.summary.examine, then the exclusions and the
Train tab's step estimate); the worker side is `dataset.load` (what `train` calls), its split and
plan (training/data.py) and `python -m training check`. Each case also states the expected
values outright, so two sides that are wrong in the same way still fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_project, run_cli
from studio import config, dataset, estimate
from studio.dataset import plan, summary
from studio.runs.project import Project

RES = 64
COLOURS = ["red", "blue", "green", "orange", "purple", "teal", "gold", "pink", "navy", "olive"]
SIZES = [(64, 64), (96, 64), (64, 96), (80, 80)]


def picture(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", SIZES[n % len(SIZES)], COLOURS[n % len(COLOURS)])
    image.putpixel((n, n), (n * 20 % 256, 0, 0))  # no two files alike: no duplicate warnings
    image.save(path)
    return path


def captioned(path: Path, n: int, text: str | bytes) -> None:
    picture(path, n)
    data = text.encode() if isinstance(text, str) else text
    path.with_suffix(".txt").write_bytes(data)


def metadata(folder: Path, rows: list[dict | str]) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


# Each case builds a folder and says what training must see: {name: (repeats, caption)} and the
# finding codes that block it (empty: it trains), plus the exclusions and top-folder repeats.
def case_cp1252(d: Path):
    captioned(d / "a.png", 0, "ink, a heron")
    captioned(d / "b.png", 1, "caf\xe9 cr\xe8me, \u201cquoted\u201d".encode("cp1252"))
    captioned(d / "c.png", 2, b"odd \x81 byte")  # undefined in cp1252: latin-1 reads it
    return {"a.png": (1, "ink, a heron"), "b.png": (1, "caf\xe9 cr\xe8me, \u201cquoted\u201d"),
            "c.png": (1, "odd \x81 byte")}, [], (), 1


def case_utf8_bom(d: Path):
    captioned(d / "a.png", 0, "\ufeffbom, caption".encode())
    captioned(d / "b.png", 1, "\ufeffna\xefve\nsecond line")
    captioned(d / "c.png", 2, "notepad unicode".encode("utf-16"))
    return {"a.png": (2, "bom, caption"), "b.png": (2, "na\xefve second line"),
            "c.png": (2, "notepad unicode")}, [], (), 2


def case_kohya(d: Path):
    captioned(d / "10_x" / "a.png", 0, "x one")
    captioned(d / "10_x" / "b.png", 1, "x two")
    for i in range(3):
        captioned(d / "3_y" / f"{i}.png", 2 + i, f"y {i}")
    picture(d / "notes" / "ignored.png", 7)  # not N_name: not part of the dataset
    return {"10_x/a.png": (10, "x one"), "10_x/b.png": (10, "x two"), "3_y/0.png": (3, "y 0"),
            "3_y/1.png": (3, "y 1"), "3_y/2.png": (3, "y 2")}, [], (), 1


def case_metadata(d: Path):
    for i in range(3):
        picture(d / f"{i}.png", i)
    (d / "2.txt").write_text("the sidecar wins")
    metadata(d, [{"file_name": "0.png", "text": "from  jsonl"}, "not json",
                 {"file_name": "1.png", "caption": "caption key"},
                 {"file_name": "2.png", "text": "ignored: 2.txt exists"}])
    return {"0.png": (1, "from jsonl"), "1.png": (1, "caption key"),
            "2.png": (1, "the sidecar wins")}, [], (), 1


def case_mixed(d: Path):
    captioned(d / "top.png", 0, "top caption")
    picture(d / "uncaptioned.png", 1)
    picture(d / "10_x" / "a.png", 2)
    picture(d / "10_x" / "b.png", 3)
    metadata(d / "10_x", [{"file_name": "a.png", "text": "x from jsonl"},
                          {"file_name": "b.png", "text": "excluded one"}])
    captioned(d / "3_y" / "c.png", 4, "y caf\xe9".encode("cp1252"))
    (d / "3_y" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # excluded below
    return {"top.png": (2, "top caption"), "uncaptioned.png": (2, ""),
            "10_x/a.png": (10, "x from jsonl"), "3_y/c.png": (3, "y caf\xe9")}, [], \
        ("10_x/b.png", "3_y/broken.png"), 2


def case_broken(d: Path):
    captioned(d / "a.png", 0, "fine")
    captioned(d / "10_x" / "b.png", 1, "fine too")
    (d / "10_x" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return None, ["corrupt"], (), 1


def case_all_excluded(d: Path):
    captioned(d / "a.png", 0, "fine")
    return None, ["no_images"], ("a.png",), 1


def case_empty(d: Path):
    (d / "3_y").mkdir(parents=True)
    (d / "readme.txt").write_text("no pictures here")
    return None, ["no_images"], (), 1


CASES = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    expected, blocks, exclude, repeats = CASES[request.param](folder)
    cfg = config.TrainConfig(dataset_dir=str(folder), resolution=RES, batch_size=2, epochs=3,
                             repeats=repeats, exclude_images=exclude, validation_images=0)
    return folder, cfg, expected, blocks


def test_the_dataset_tab_and_the_worker_agree(case, tmp_path):
    folder, cfg, expected, blocks = case
    # The GUI: the session's report (everything scanned, then the project's exclusions).
    report = summary.examine(folder, cfg.exclude_images, cfg.resolution, cfg.repeats)
    gui_blocks = sorted(f.code for f in report.blocking())
    gui = {it.name: (it.repeats, it.caption) for it in report.training_items()}
    # The worker: `train` loads the dataset this way and refuses on DatasetError.
    try:
        items = dataset.load(folder, cfg.exclude_images, cfg.repeats)
        worker_blocks = []
    except dataset.DatasetError as exc:
        items, worker_blocks = [], sorted(f.code for f in exc.findings if f.fatal)
    worker = {it.name: (it.repeats, it.caption) for it in items}

    assert gui_blocks == worker_blocks == sorted(blocks)
    if blocks:
        return
    assert gui == worker == expected
    assert [it.name for it in report.training_items()] == [it.name for it in items]  # order
    assert [it.size for it in report.training_items()] == [it.size for it in items]

    # Steps: the Train tab's estimate, the trainer's own split and plan, and `check`.
    from training import check, data

    train, _ = data.split_validation(items, cfg)
    sizes = plan.bucket_sizes([it.size for it in train], cfg)
    engine = plan.steps(sizes, [it.repeats for it in train], cfg)
    project = Project(tmp_path / "project")
    project.save_config(cfg)
    checked = check.report(project, cfg)
    assert estimate.plan_steps(cfg, report.training_items()) == engine == \
        (checked["steps_per_epoch"], checked["total_steps"])
    assert checked["images"] == len(expected) and not checked["blocking"]
    assert checked["image_steps_per_epoch"] == sum(r for r, _ in expected.values())


def test_a_notepad_caption_is_a_warning_on_both_sides(tmp_path):
    d = tmp_path / "data"
    captioned(d / "a.png", 0, "caf\xe9".encode("cp1252"))
    report = summary.examine(d, (), RES)
    found = [f for f in report.findings if f.code == "caption_not_utf8"]
    assert [f.severity for f in found] == ["warning"] and "caf\xe9" in found[0].message
    assert report.blocking() == []
    assert [it.caption for it in dataset.load(d)] == ["caf\xe9"]


@pytest.mark.slow
def test_a_kohya_folder_with_a_notepad_caption_trains_its_planned_steps(tmp_path, tiny_model):
    """The real worker on a mixed kohya folder: exit 0, the cp1252 warning in its log, and as
    many steps as the Train tab estimated."""
    root = make_project(tmp_path / "p", tiny_model, n_images=0, max_steps=0, epochs=1,
                        repeats=2, validation_images=0,
                        exclude_images=["10_x/b.png", "3_y/broken.png"])
    folder = root / "dataset"
    expected, _, _, _ = case_mixed(folder)
    cfg = Project(root).load_config()
    report = summary.examine(folder, cfg.exclude_images, cfg.resolution, cfg.repeats)
    _, estimated = estimate.plan_steps(cfg, report.training_items())
    run = run_cli("train", str(root), "--json")
    assert run.returncode == 0, run.stderr
    assert "c.txt" in run.stderr and "not UTF-8" in run.stderr  # the same warning as the tab
    progress = run.of("progress")
    assert progress and progress[-1]["total"] == estimated == progress[-1]["step"]
    assert estimated >= sum(r for r, _ in expected.values()) // cfg.batch_size


def orphans(report) -> dict[str, str]:
    return {f.path.name: f.message for f in report.findings if f.code == "caption_orphan"}


def test_a_caption_is_not_used_only_when_no_image_reads_it(tmp_path):
    """Issue 14: the doctor called a caption "not used" while the editor showed it for its
    image. The doctor now asks the editor's question (captions.source) for every listed image."""
    d, outside = tmp_path / "data", tmp_path / "elsewhere"
    captioned(d / "a.png", 0, "ink, a heron")
    # Two names for one file: what a case-insensitive disk (Windows, macOS) shows for a.png's
    # caption saved as a.TXT, where the lookup of a.txt opens a.TXT.
    (d / "a.TXT").hardlink_to(d / "a.txt")
    # An image linked out of the dataset is listed (and not used); its caption is its own.
    (d / "b.png").symlink_to(picture(outside / "b.png", 1))
    (d / "b.txt").write_text("reeds")
    picture(d / "c.png", 2)
    (d / "c.png.txt").write_text("a caption named after the whole file name")
    captioned(d / "d.png", 3, "mist")
    (d / "d.caption").write_text("an older caption")
    report = summary.examine(d, (), RES)
    for image in (d / "a.png", d / "b.png"):
        where = dataset.captions.source(image)
        assert where is not None and orphans(report).get(where.path.name) is None
    assert set(orphans(report)) == {"c.png.txt", "d.caption"}
    assert "d.txt is used instead" in orphans(report)["d.caption"]
    assert "c.png's caption is read from c.txt; rename it" in orphans(report)["c.png.txt"]
    assert report.captions[d / "a.png"] == "ink, a heron"
