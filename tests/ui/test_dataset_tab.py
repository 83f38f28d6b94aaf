"""The Dataset tab: open a folder, thumbnails and badges, caption editing with undo, exclusions,
bulk edits; and that the artist's images are never written."""

from __future__ import annotations

import dataclasses
import json

from PySide6.QtCore import Qt
from PIL import Image

from studio import estimate
from studio.dataset import captions
from ui.bulk_dialogs import FindReplaceDialog
from ui.dataset_model import ExcludedRole, GroupRole, IssuesRole
from uihelpers import digests, open_and_wait
from uifixtures import *  # noqa: F403 (pytest fixtures)


def index_of(tab, path):
    return tab.model.index(tab.model.row_of(path))


def test_opening_a_folder_shows_every_image_with_its_findings(qtbot, window, art):
    before = digests(art)
    project = open_and_wait(qtbot, window, art)
    tab = window.dataset_tab
    assert window.stack.currentWidget() is window.tabs
    assert tab.model.rowCount() == len(before) == 11
    assert project.root.parent.name == "projects" and not (art / "project.toml").exists()
    assert any(i.fatal for i in index_of(tab, art / "notes.png").data(IssuesRole))
    assert index_of(tab, art / "art_000.jpg").data(IssuesRole) == []
    # Thumbnails are decoded off the GUI thread and arrive as pixmaps.
    qtbot.waitUntil(lambda: tab.loader.pending() == 0, timeout=20000)
    assert index_of(tab, art / "art_000.jpg").data(Qt.ItemDataRole.DecorationRole) is not None
    assert index_of(tab, art / "notes.png").data(Qt.ItemDataRole.DecorationRole) is None

    tab.filter.setCurrentIndex(tab.filter.findData("duplicates"))
    assert tab.proxy.rowCount() == 1 and tab.summary.findings.count() == 1
    assert tab.summary.currentIndex() == 1  # a problem filter shows the findings list
    tab.filter.setCurrentIndex(tab.filter.findData("problems"))
    assert tab.proxy.rowCount() == 4
    tab.filter.setCurrentIndex(0)
    assert "of 11 images used for training" in tab.summary.text.text()
    assert "cannot be used" in tab.summary.text.text()
    assert digests(art) == before


def test_a_caption_edit_is_saved_to_its_txt_and_can_be_undone(qtbot, window, art):
    open_and_wait(qtbot, window, art)
    tab, txt = window.dataset_tab, art / "art_000.txt"
    original = txt.read_text()
    tab.select_image(art / "art_000.jpg")
    assert tab.captions.editor.toPlainText() == original
    tab.captions.editor.setPlainText("ink wash, a heron")
    qtbot.waitUntil(lambda: txt.read_text() == "ink wash, a heron", timeout=5000)  # autosave
    assert "saved" in tab.captions.state.text()
    assert not [p for p in art.iterdir() if p.name.startswith(".")]  # no temporary file left
    window.session.undo_stack.undo()
    assert txt.read_text() == original and tab.captions.editor.toPlainText() == original
    window.session.undo_stack.redo()
    assert txt.read_text() == "ink wash, a heron"


def test_captioning_an_uncaptioned_image_creates_its_txt_and_undo_removes_it(qtbot, window, art):
    open_and_wait(qtbot, window, art)
    tab, image = window.dataset_tab, art / "art_002.jpg"
    assert any(f.code == "caption_missing" for f in window.session.report.for_path(image))
    tab.select_image(image)
    tab.captions.editor.setPlainText("a lighthouse")
    tab.select_image(art / "art_000.jpg")  # switching images saves at once
    assert (art / "art_002.txt").read_text() == "a lighthouse"
    assert not any(f.code == "caption_missing" for f in window.session.report.for_path(image))
    window.session.undo_stack.undo()
    assert not (art / "art_002.txt").exists() and image.exists()
    assert any(f.code == "caption_missing" for f in window.session.report.for_path(image))


def test_exclude_and_include_change_only_the_project_settings(qtbot, window, art, sd15):
    before = digests(art)
    project = open_and_wait(qtbot, window, art, sd15)
    tab = window.dataset_tab
    assert "cannot be read" in window.train_tab.reason.text()
    tab.select_image(art / "notes.png")
    assert tab.exclude_button.isEnabled() and not tab.include_button.isEnabled()
    tab.exclude_button.click()
    assert window.session.config.exclude_images == ("notes.png",)
    window.session.save_now()
    assert project.load_config().exclude_images == ("notes.png",)
    assert index_of(tab, art / "notes.png").data(ExcludedRole)
    assert "cannot be read" not in window.train_tab.reason.text()
    window.session.undo_stack.undo()
    assert window.session.config.exclude_images == ()
    window.session.undo_stack.redo()
    tab.select_image(art / "notes.png")
    tab.include_button.click()
    assert window.session.config.exclude_images == ()
    assert digests(art) == before and (art / "notes.png").exists()


def test_bulk_trigger_word_and_find_replace_are_undoable(qtbot, window, art):
    before = digests(art)
    open_and_wait(qtbot, window, art)
    tab = window.dataset_tab
    window.session.update(trigger_word="inkwash")
    originals = {p: p.read_text() for p in art.glob("*.txt")}
    tab.add_trigger_word()
    for path in art.glob("*.txt"):
        assert path.read_text().startswith("inkwash"), path
    assert (art / "art_002.txt").read_text() == "inkwash"  # the uncaptioned image got one
    window.session.undo_stack.undo()
    assert {p: p.read_text() for p in art.glob("*.txt")} == originals
    assert not (art / "art_002.txt").exists()

    images = [art / f"art_00{i}.jpg" for i in range(4)]
    dialog = FindReplaceDialog(images, "4 images")
    qtbot.addWidget(dialog)
    dialog.find.setText("flat colours")
    expected = sum("flat colours" in originals.get(p.with_suffix(".txt"), "") for p in images)
    assert f"{expected} caption(s) will change" in dialog.preview.text()
    changed = tab.apply_bulk(images, dialog.edit(), "Remove 'flat colours'")
    assert changed == expected > 0
    assert all("flat colours" not in (captions.read(p) or "") for p in images)
    window.session.undo_stack.undo()
    assert {p: p.read_text() for p in art.glob("*.txt")} == originals
    assert digests(art) == before


def kohya_folder(root):
    """A kohya-style dataset: nothing at the top, `10_ink/` with metadata.jsonl captions and
    `3_sketch/` with .txt captions."""
    for i, (sub, colour) in enumerate([("10_ink", "red"), ("10_ink", "blue"),
                                       ("3_sketch", "green")]):
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (96 + 8 * i, 96), colour).save(root / sub / f"{colour}.png")
    (root / "3_sketch" / "green.txt").write_text("a green sketch")
    (root / "10_ink" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "red.png", "text": "red ink wash"}) + "\n" +
        json.dumps({"file_name": "blue.png", "text": "blue ink", "score": 7}) + "\n")
    return root


def test_a_kohya_folder_shows_its_groups_and_edits_metadata_jsonl(qtbot, window, tmp_path, sd15):
    folder = kohya_folder(tmp_path / "kohya art")
    pixels = {p: p.read_bytes() for p in folder.rglob("*.png")}
    open_and_wait(qtbot, window, folder, sd15)  # no longer refused: it has no top-level images
    tab, red = window.dataset_tab, folder / "10_ink" / "red.png"
    assert tab.model.images == [folder / "10_ink" / "blue.png", red,
                                folder / "3_sketch" / "green.png"]  # grouped, training order
    assert index_of(tab, red).data(GroupRole) == "10_ink · ×10"
    assert index_of(tab, folder / "3_sketch" / "green.png").data(GroupRole) == "3_sketch · ×3"
    assert "trained 10× per epoch" in index_of(tab, red).data(Qt.ItemDataRole.ToolTipRole)
    assert "10_ink/ 2 × 10" in tab.summary.text.text()
    assert not any(f.code == "caption_missing" for f in window.session.report.findings)
    # The Train tab trains it, with the steps the worker plans from the folders' repeats.
    assert window.train_tab.reason.text() == ""
    cfg, items = window.session.config, window.session.report.training_items()
    assert [it.repeats for it in items] == [10, 10, 3]
    _, total = estimate.plan_steps(cfg, items)
    _, once = estimate.plan_steps(cfg, [dataclasses.replace(it, repeats=1) for it in items])
    assert total > once  # the repeats count
    assert f"<b>{total:,}</b>" in window.train_tab.settings.estimate.text()

    tab.select_image(red)
    assert tab.captions.editor.toPlainText() == "red ink wash"
    assert "metadata.jsonl" in tab.captions.state.text()
    tab.captions.editor.setPlainText("red ink wash, heron")
    tab.select_image(folder / "10_ink" / "blue.png")  # switching images saves at once
    rows = [json.loads(line) for line in (folder / "10_ink" / "metadata.jsonl").open()]
    assert rows == [{"file_name": "red.png", "text": "red ink wash, heron"},
                    {"file_name": "blue.png", "text": "blue ink", "score": 7}]
    assert window.session.report.captions[red] == "red ink wash, heron"
    assert not (folder / "10_ink" / "red.txt").exists()  # written where it lives
    window.session.undo_stack.undo()
    assert json.loads((folder / "10_ink" / "metadata.jsonl").open().readline())["text"] == \
        "red ink wash"
    # Excluding a subfolder image names it as the worker does.
    tab.select_image(red)
    tab.exclude_button.click()
    assert window.session.config.exclude_images == ("10_ink/red.png",)
    assert {p: p.read_bytes() for p in folder.rglob("*.png")} == pixels  # never written


def test_a_made_up_first_word_becomes_the_trigger_word_and_the_preview_is_large(
        qtbot, window, tmp_path):
    """The demo style set: every caption starts with "zxqstyle" (issue 14)."""
    import shutil
    from pathlib import Path

    demo = tmp_path / "demo-style"
    shutil.copytree(Path(__file__).resolve().parents[2] / "assets" / "demo-style", demo)
    before = digests(demo)
    open_and_wait(qtbot, window, demo)
    assert window.session.config.trigger_word == "zxqstyle"
    assert not any(f.code == "near_duplicate" for f in window.session.report.findings)
    assert digests(demo) == before
    preview = window.dataset_tab.captions.preview
    assert min(preview.minimumSize().toTuple()) >= 256  # a 64 px image at 4x or more


def test_ordinary_shared_first_words_are_not_trigger_words():
    from studio.dataset.summary import shared_trigger

    assert shared_trigger(["zxqstyle, a red circle", "zxqstyle, a blue square",
                           "zxqstyle, a star"]) == "zxqstyle"
    assert shared_trigger(["zxqstyle, a", "zxqstyle, b"]) == ""  # too few to tell
    assert shared_trigger(["1girl, red hair", "1girl, solo", "1girl, hat"]) == ""
    assert shared_trigger(["a photo of a cat", "a photo of a dog", "a photo of a fox"]) == ""
    assert shared_trigger(["inkwash, heron", "inkwash, reeds", "boat"]) == ""
    assert shared_trigger(["my style, a", "my style, b", "my style, c"]) == ""  # not one word


def test_the_doctor_never_calls_unused_a_caption_the_editor_shows(qtbot, window, tmp_path):
    """Issue 14: "calls a caption 'not used' while the editor shows it for its image"."""
    folder, outside = tmp_path / "art", tmp_path / "elsewhere"
    folder.mkdir(), outside.mkdir()
    for n, name in enumerate(["a", "c", "d"]):
        Image.new("RGB", (64, 64), (n * 90, 40, 200)).save(folder / f"{name}.png")
    (folder / "a.txt").write_text("ink, a heron")
    (folder / "a.TXT").hardlink_to(folder / "a.txt")  # one file, two names: a Windows/macOS disk
    Image.new("RGB", (64, 64), "teal").save(outside / "b.png")
    (folder / "b.png").symlink_to(outside / "b.png")  # listed, not used: its caption is its own
    (folder / "b.txt").write_text("reeds")
    (folder / "d.txt").write_text("mist")
    (folder / "d.caption").write_text("an older caption")
    open_and_wait(qtbot, window, folder)
    tab = window.dataset_tab
    unused = [tab.summary.findings.item(i).text() for i in range(tab.summary.findings.count())
              if "is not used" in tab.summary.findings.item(i).text()]
    for image, text in [("a.png", "ink, a heron"), ("b.png", "reeds"), ("d.png", "mist")]:
        tab.select_image(folder / image)
        assert tab.captions.editor.toPlainText() == text
        shown = captions.source(folder / image).path.name
        assert not [u for u in unused if f" {shown} is not used" in u], unused
    assert [u for u in unused if "d.caption is not used: d.txt is used instead" in u]
