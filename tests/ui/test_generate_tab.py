"""The Generate tab against the fake generation worker (tests/fake_worker.py serve): generate with
progress into the history, cancel, strengths in the command, with / without, the grid, merge,
trigger words from real file metadata, errors, and one GPU worker at a time with training."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog

from studio import infotext, protocol
from ui.merge_dialog import MergeDialog
from ui.widgets.image_viewer import ImageViewer
from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import make_run, open_and_wait, write_lora

TIMEOUT = 20000


@pytest.fixture
def gen(qtbot, window, clean_art, sd15, fake_worker):
    """The window with a project that has two finished runs; the Generate tab shown."""
    project = open_and_wait(qtbot, window, clean_art, sd15)
    make_run(project.root, "20260101-100000", output="first-try", trigger="inkwash",
             checkpoints=(50,), final_step=100)
    make_run(project.root, "20260102-100000", output="inkwash-style", trigger="inkwash")
    window.tabs.setCurrentWidget(window.generate_tab)  # shown: the runs are listed
    tab = window.generate_tab
    tab.form.steps.setValue(6)
    tab.form.set_defaults(64, tab.form.steps.value(), tab.form.cfg.value())
    tab.form.prompt.setPlainText("inkwash, a heron in the reeds")
    tab.form.negative.setPlainText("blurry, lowres")
    return tab


def act(qtbot, tab, action, timeout=TIMEOUT):
    """Run a Generate-tab action and wait until the worker has nothing left to do."""
    with qtbot.waitSignal(tab.preview.idle, timeout=timeout):
        assert action() is not False
    return tab


def newest_row(tab):
    return tab.adapters.rows[0]


def test_generate_shows_progress_and_the_result_with_its_parameters(qtbot, gen, fake_worker):
    tab = gen
    assert [r.name.full_text() for r in tab.adapters.rows] == [
        "inkwash-style · 2 Jan 10:00", "first-try · 1 Jan 10:00"]
    assert newest_row(tab).is_enabled() and not tab.adapters.rows[1].is_enabled()
    assert tab.form.width_box.value() == 64
    tab.form.count.setValue(2)
    steps = []
    tab.preview.progress.connect(lambda job, e: steps.append((e.image, e.step)))
    act(qtbot, tab, tab.generate_button.click)
    assert steps == [(i, s) for i in range(2) for s in range(1, 7)]  # per image, per step
    assert tab.progress.value() == tab.progress.maximum() == 12
    assert "Done" in tab.detail.text() and tab.error.isHidden()

    load, = fake_worker.sent("load")
    assert load["base_model"] == tab.session.config.base_model
    request, = fake_worker.sent("generate")
    seed = request["seed"]
    assert tab.form.seed.value() == seed  # the seed used is shown (and can be locked)
    final = tab.session.project.root / "runs/20260102-100000/inkwash-style.safetensors"
    assert request["adapters"] == [[str(final), 1.0]]
    assert (request["steps"], request["width"], request["count"]) == (6, 64, 2)
    assert Path(request["out_dir"]) == tab.session.project.root / "generated"
    # Only typed requests crossed the boundary: every line parses back into its dataclass.
    typed = [protocol.parse_request(line) for line in fake_worker.commands() if line != "EOF"]
    assert [type(r) for r in typed] == [protocol.LoadRequest, protocol.GenerateRequest]
    assert typed[1].id.startswith("job") and typed[1].prompt == "inkwash, a heron in the reeds"

    assert tab.history.count() == 2
    newest = tab.history.paths()[0]
    assert tab.result.path == newest and newest.is_file()
    params = infotext.parse(Image.open(newest).text["parameters"])
    assert params.seed == seed + 1 and params.loras == (("inkwash-style", 1.0),)
    info = tab.result.info.text()  # from the PNG's parameters chunk (several lines)
    assert "a heron in the reeds" in info and f"seed <b>{seed + 1}</b>" in info
    assert "<b>Negative:</b> blurry, lowres" in info
    assert "inkwash-style 1" in info

    tab.history.setCurrentRow(1)  # the older one: its own parameters
    assert f"seed <b>{seed}</b>" in tab.result.info.text()
    tab.result.copy_seed.click()
    assert QGuiApplication.clipboard().text() == str(seed)
    tab.result.copy_prompt.click()
    assert QGuiApplication.clipboard().text().startswith("inkwash, a heron in the reeds")


def test_a_request_the_worker_would_refuse_is_shown_not_sent(qtbot, gen, fake_worker):
    tab = gen
    tab.form.width_box.setMaximum(8192)  # were a widget ever to allow more than the worker
    tab.form.width_box.setValue(4096)
    assert tab.generate() is False
    assert not tab.error.isHidden() and "width must be between" in tab.error.text()
    assert fake_worker.sent("generate") == [] and not tab.preview.busy()
    tab.form.width_box.setValue(64)
    act(qtbot, tab, tab.generate_button.click)
    assert len(fake_worker.sent("generate")) == 1


def test_save_as_and_reuse_settings(qtbot, gen, tmp_path, monkeypatch):
    tab = gen
    act(qtbot, tab, tab.generate)
    target = tmp_path / "keep" / "heron"
    target.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    tab.result.save.click()
    saved = target.with_suffix(".png")
    assert "a heron" in Image.open(saved).text["parameters"]  # the parameters travel with it
    seed = infotext.parse(tab.result.text).seed
    tab.form.prompt.setPlainText("something else")
    tab.form.steps.setValue(30)
    tab.result.reuse.click()
    assert tab.form.prompt.toPlainText() == "inkwash, a heron in the reeds"
    assert tab.form.seed.value() == seed and tab.form.lock.isChecked()
    assert tab.form.steps.value() == 6


def test_the_history_comes_back_with_the_project(qtbot, gen, clean_art):
    tab, window = gen, gen.window()
    tab.form.count.setValue(3)
    act(qtbot, tab, tab.generate)
    before = tab.history.paths()
    window.close_project()
    assert tab.history.count() == 0
    qtbot.waitUntil(lambda: not tab.preview.is_running(), timeout=TIMEOUT)  # it was stopped
    assert window.open_path(clean_art)
    qtbot.waitUntil(lambda: window.session.report is not None, timeout=TIMEOUT)
    assert tab.history.paths() == before  # newest first, read from the project's folder
    tab.history.setCurrentRow(0)
    assert tab.result.path == before[0]
    assert "<b>Negative:</b> blurry, lowres" in tab.result.info.text()


def test_cancel_stops_mid_image_and_the_worker_keeps_serving(qtbot, gen, fake_worker):
    tab = gen
    fake_worker.serve_delay = 0.05
    tab.form.steps.setValue(150)
    tab.generate_button.click()
    assert tab.cancel_button.isEnabled() and not tab.generate_button.isEnabled()
    qtbot.waitUntil(lambda: tab.progress.value() >= 3, timeout=TIMEOUT)
    with qtbot.waitSignal(tab.preview.idle, timeout=TIMEOUT):
        tab.cancel_button.click()
    assert "Cancelled" in tab.detail.text()
    assert tab.history.count() == 0 and tab.error.isHidden()
    assert '{"cmd": "cancel"}' in fake_worker.commands()
    assert tab.generate_button.isEnabled() and not tab.cancel_button.isEnabled()
    tab.form.steps.setValue(3)
    act(qtbot, tab, tab.generate_button.click)  # the same worker, still loaded
    assert tab.history.count() == 1 and len(fake_worker.sent("load")) == 1


def test_strengths_and_enabled_loras_go_into_the_command(qtbot, gen, fake_worker, tmp_path):
    tab = gen
    newest, older = tab.adapters.rows
    newest.slider.setValue(10)  # 10 ticks of 0.05
    assert newest.strength.value() == 0.5
    older.enabled.setChecked(True)
    older.strength.setValue(-0.25)
    assert older.slider.value() == -5
    assert older.version.isVisible() and older.version.count() == 2
    older.version.setCurrentIndex(1)  # its checkpoint at step 50
    assert older.version.currentText() == "step 50"
    other = write_lora(tmp_path / "downloads" / "someone-else.safetensors",
                       {"ss_output_name": "someone-else"})
    row = tab.adapters.add_file(other)
    row.strength.setValue(1.75)
    act(qtbot, tab, tab.generate)
    root = tab.session.project.root
    assert fake_worker.sent("generate")[-1]["adapters"] == [
        [str(root / "runs/20260102-100000/inkwash-style.safetensors"), 0.5],
        [str(root / "runs/20260101-100000/checkpoints/first-try-step000050.safetensors"), -0.25],
        [str(other), 1.75]]
    for r in tab.adapters.rows:
        r.enabled.setChecked(False)
    assert not tab.compare.button.isEnabled() and not tab.merge_button.isEnabled()
    act(qtbot, tab, tab.generate)
    assert fake_worker.sent("generate")[-1]["adapters"] == []  # explicit: the base model


def test_a_new_run_comes_first_and_added_files_stay(qtbot, gen, tmp_path):
    tab, window = gen, gen.window()
    other = write_lora(tmp_path / "other.safetensors", {})
    tab.adapters.add_file(other)
    window.tabs.setCurrentWidget(window.train_tab)  # the Generate tab hidden meanwhile
    root = tab.session.project.root
    make_run(root, "20260103-100000", output="third")
    tab.refresh_loras()
    window.tabs.setCurrentWidget(tab)  # refreshes again when shown
    assert [r.key for r in tab.adapters.rows] == [
        str(root / "runs/20260103-100000"), str(root / "runs/20260102-100000"),
        str(root / "runs/20260101-100000"), str(other)]
    assert [r.is_enabled() for r in tab.adapters.rows] == [False, True, False, True]
    assert tab.grid.run.count() == 3


def test_with_and_without_use_one_seed_and_show_both(qtbot, gen, fake_worker):
    tab = gen
    newest_row(tab).strength.setValue(0.8)
    act(qtbot, tab, tab.compare.button.click)
    with_lora, without = fake_worker.sent("generate")
    assert with_lora["seed"] == without["seed"] and with_lora["count"] == without["count"] == 1
    assert with_lora["adapters"][0][1] == 0.8 and without["adapters"] == []
    assert tab.views.currentWidget() is tab.compare
    assert set(tab.compare.paths) == {"with", "without"}
    images = {side: Image.open(path) for side, path in tab.compare.paths.items()}
    assert images["with"].tobytes() != images["without"].tobytes()
    assert "inkwash-style 0.8" in tab.compare.labels["with"].text()
    assert "Without LoRA" in tab.compare.labels["without"].text()
    assert f"Same seed ({with_lora['seed']})" in tab.compare.caption.text()
    assert tab.history.count() == 2  # both are kept in the history too


def test_with_and_without_at_one_scale_and_overlaid(qtbot, gen, monkeypatch):
    tab, compare = gen, gen.compare
    tab.views.setCurrentWidget(compare)
    act(qtbot, tab, compare.button.click)
    with_, without = compare.previews["with"], compare.previews["without"]
    assert with_.size() == without.size() and with_.scale() == without.scale() >= 2
    assert with_.scale() == int(with_.scale())  # 64 px results enlarged by whole pixels
    assert compare.stack.currentIndex() == 0
    compare.mode_buttons.buttons()[1].click()  # overlay with a split line
    assert compare.stack.currentWidget() is compare.overlay and not compare.overlay.blinking()
    assert compare.overlay.after.toImage() == with_.pixmap().toImage()
    assert compare.overlay.before.toImage() == without.pixmap().toImage()
    compare.mode_buttons.buttons()[2].click()  # blinking
    assert compare.overlay.blinking()
    compare.set_mode("side")
    assert not compare.overlay.blinking() and compare.stack.currentIndex() == 0
    compare.open_button.click()  # opens in the app, never depends on an external viewer
    viewer = next(w for w in compare.findChildren(ImageViewer))
    assert viewer.isVisible() and viewer.view.pixmap().size() == with_.pixmap().size()


def test_open_full_size_opens_the_in_app_viewer(qtbot, gen, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url))
    tab = gen
    act(qtbot, tab, tab.generate)
    tab.result.open_button.click()
    act(qtbot, tab, tab.grid.button.click)
    tab.grid.open_button.click()
    viewers = [w for w in tab.findChildren(ImageViewer) if w.isVisible()]
    assert [v.windowTitle() for v in viewers] == [tab.result.path.name, tab.grid.path.name]
    assert opened == []


def test_the_grid_command_and_its_result(qtbot, gen, fake_worker, tmp_path, monkeypatch):
    tab = gen
    grid = tab.grid
    tab.views.setCurrentWidget(grid)
    assert grid.run.count() == 2 and "3 files" in grid.run.currentText()
    assert "3 LoRA files × 5 strengths = 15 images" in grid.summary.text()
    grid.strengths.setText("0, 1.5, banana")
    assert not grid.button.isEnabled() and "banana" in grid.summary.text()
    grid.strengths.setText("0, 0.5, 1")
    act(qtbot, tab, grid.button.click)
    command, = fake_worker.sent("grid")
    run = tab.session.project.root / "runs/20260102-100000"
    assert command["checkpoints"] == [
        str(run / "checkpoints/inkwash-style-step000100.safetensors"),
        str(run / "checkpoints/inkwash-style-step000200.safetensors"),
        str(run / "inkwash-style.safetensors")]  # rows in training order, the final last
    assert command["strengths"] == [0, 0.5, 1]
    assert "count" not in command and "adapters" not in command
    assert Path(command["out"]).parent == tab.session.project.root / "generated" / "grids"
    assert grid.path == Path(command["out"]) and grid.path.is_file()
    assert Image.open(grid.path).size[0] > 3 * 64  # labelled cells
    # Shown with labels readable at screen size (the PNG's own are sized for the full image).
    assert grid.preview.labelled()
    assert grid.preview.rows == ["step 100", "step 200", "final (step 300)"]
    assert grid.preview.cols == ["strength 0", "strength 0.5", "strength 1"]
    assert grid.preview.source.size().toTuple() == (3 * 256, 3 * 256)  # 64 px cells shown ×4
    assert tab.history.count() == 0  # grids live in the grid view
    target = tmp_path / "grid-copy.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    grid.save.click()
    assert target.read_bytes() == grid.path.read_bytes()


def test_merge_sends_the_adapters_format_and_precision(qtbot, gen, fake_worker):
    tab = gen
    newest_row(tab).strength.setValue(0.7)
    tab.merge_button.click()
    dialog = tab.findChild(MergeDialog)
    assert dialog is not None and dialog.isVisible()
    dialog.set_format("diffusers")
    assert not dialog.out.text().endswith(".safetensors")
    dialog.precision.setCurrentIndex(1)
    with qtbot.waitSignal(tab.preview.idle, timeout=TIMEOUT):
        dialog.accept()
    command, = fake_worker.sent("merge")
    final = tab.session.project.root / "runs/20260102-100000/inkwash-style.safetensors"
    assert command["adapters"] == [[str(final), 0.7]]
    assert (command["format"], command["precision"]) == ("diffusers", "fp32")
    out = Path(command["out"])
    assert out.parent == tab.session.project.root / "merged" and "inkwash-style-0.7" in out.name
    assert (out / "model_index.json").is_file()
    assert "Merged model saved" in tab.detail.text()


def test_trigger_words_come_from_the_files_metadata(qtbot, gen, tmp_path, monkeypatch):
    tab = gen
    tab.form.prompt.setPlainText("a heron")
    row = newest_row(tab)
    assert row.trigger.text() == "+ inkwash" and row.trigger.isEnabled()
    row.trigger.click()
    assert tab.form.prompt.toPlainText() == "inkwash, a heron"
    row.trigger.click()  # already there: not twice
    assert tab.form.prompt.toPlainText() == "inkwash, a heron"
    # A kohya file from another trainer: no modelspec, but its most frequent caption tag.
    kohya = write_lora(tmp_path / "civitai" / "pastel.safetensors", {
        "ss_tag_frequency": '{"10_pastel": {"pastelz": 24, "1girl": 9, "tree": 3}}',
        "ss_num_train_images": "24"})
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(kohya), ""))
    tab.adapters.add_button.click()
    added = tab.adapters.rows[-1]
    assert added.is_enabled() and added.trigger.text() == "+ pastelz"
    added.trigger.click()
    assert tab.form.prompt.toPlainText() == "pastelz, inkwash, a heron"
    bare = write_lora(tmp_path / "bare.safetensors", {})
    assert not tab.adapters.add_file(bare).trigger.isEnabled()
    (tmp_path / "broken.safetensors").write_bytes(b"\xff" * 12)
    assert tab.adapters.add_file(tmp_path / "broken.safetensors") is None


def test_a_crashed_or_failing_worker_is_reported_and_restarted(qtbot, gen, fake_worker):
    tab = gen
    fake_worker.serve_mode = "crash"
    act(qtbot, tab, tab.generate)
    assert not tab.error.isHidden()
    assert "stopped unexpectedly (exit code 134)" in tab.error.text()
    assert "GPU driver" in tab.error.text()  # the stderr tail mapped to a hint
    assert tab.generate_button.isEnabled()
    fake_worker.serve_mode = "badload"
    act(qtbot, tab, tab.generate)
    assert "Base model not found" in tab.error.text()
    fake_worker.serve_mode = "ok"
    tab.preview.stop()
    qtbot.waitUntil(lambda: not tab.preview.is_running(), timeout=TIMEOUT)
    act(qtbot, tab, tab.generate)
    assert tab.error.isHidden() and tab.history.count() == 1


def test_an_error_fails_only_the_job_it_names(qtbot, gen, fake_worker):
    """The worker refuses a line it cannot read at once, from its reader thread, while a job
    runs (training/serve.py): that error (no id) is logged and the job goes on; an error
    carrying the job's id fails the job."""
    from studio import protocol

    tab = gen
    fake_worker.serve_delay = 0.05
    logged = []
    tab.preview.log.connect(logged.append)
    with qtbot.waitSignal(tab.preview.idle, timeout=TIMEOUT):
        tab.generate()
        qtbot.waitUntil(lambda: tab.preview.current is not None, timeout=TIMEOUT)
        tab.preview._on_event(tab.preview.worker, protocol.Error(
            message="not a command the worker can read: 'hello'", hint="bad command"))
    assert tab.error.isHidden() and tab.history.count() == 1
    assert any("not a command the worker can read" in line for line in logged)
    failed = []
    tab.preview.job_failed.connect(lambda job, message, hint: failed.append(message))
    with qtbot.waitSignal(tab.preview.idle, timeout=TIMEOUT):
        tab.generate()
        qtbot.waitUntil(lambda: tab.preview.current is not None, timeout=TIMEOUT)
        job = tab.preview.current
        tab.preview._on_event(tab.preview.worker, protocol.Error(
            message="generate: out of memory", hint="Try a smaller size.", id=job.id))
    assert failed == ["generate: out of memory"] and "out of memory" in tab.error.text()


def test_training_stops_the_preview_first_and_pauses_the_tab(qtbot, gen, fake_worker):
    tab, window = gen, gen.window()
    act(qtbot, tab, tab.generate)
    assert tab.preview.is_running()
    order = []
    tab.preview.state_changed.connect(lambda state: order.append(f"preview {state}"))
    window.train_tab.running_changed.connect(lambda on: order.append(f"training {on}"))
    fake_worker.steps, fake_worker.delay = 60, 0.02
    window.tabs.setCurrentWidget(window.train_tab)
    train = window.train_tab
    assert train.train_button.isEnabled(), train.reason.text()
    train.train_button.click()
    qtbot.waitUntil(train.is_running, timeout=TIMEOUT)
    # The process had exited before the training worker started: never two GPU workers.
    assert order[:3] == ["preview stopping", "preview stopped", "training True"]
    assert '{"cmd": "quit"}' in fake_worker.commands()
    assert not tab.pause_banner.isHidden() and "Preview paused while training" in \
        tab.pause_banner.text()
    assert window.tabs.tabText(2) == "3  Generate (paused)"
    assert not tab.generate_button.isEnabled() and not tab.grid.button.isEnabled()
    assert tab.generate() is False  # nothing starts while paused
    qtbot.waitUntil(lambda: not train.is_running() and tab.generate_button.isEnabled(),
                    timeout=TIMEOUT)
    assert tab.pause_banner.isHidden() and tab.generate_button.isEnabled()
    assert window.tabs.tabText(2) == "3  Generate"
    act(qtbot, tab, tab.generate)  # restarted lazily: a new process, the model loaded again
    assert len(fake_worker.sent("load")) == 2 and tab.history.count() == 2

    # "Open in Generate" on the finished banner: the new LoRA, alone, in the Generate tab.
    window.tabs.setCurrentWidget(train)
    train.panel.banner.open_button.click()
    assert window.tabs.currentWidget() is tab
    enabled = [r for r in tab.adapters.rows if r.is_enabled()]
    assert len(enabled) == 1 and enabled[0].path() == train.panel.adapter
    assert tab.grid.selected().run == train.panel.adapter.parent  # the grid's run too


def test_the_catalog_and_the_worker_agree_on_samplers_and_files(tmp_path):
    import ast

    from studio import protocol
    from studio.runs import loras as lora_catalog
    from studio.runs.project import Project
    from uihelpers import ROOT

    tree = ast.parse((ROOT / "training" / "generate.py").read_text())
    samplers = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", "") == "SAMPLERS")
    assert tuple(k.value for k in samplers.keys) == protocol.SAMPLERS == lora_catalog.SAMPLERS
    make_run(tmp_path, "20260101-000000", checkpoints=(100, 200, 1000))
    (tmp_path / "runs" / "20260101-000001").mkdir()  # a failed run: no LoRA, not listed
    (tmp_path / "runs" / "20260101-000001" / "config.toml").write_text("")
    runs = lora_catalog.project_loras(Project(tmp_path))
    assert len(runs) == 1
    assert [f.label for f in runs[0].files] == ["final (step 300)", "step 1,000", "step 200",
                                                "step 100"]
    assert [f.step for f in runs[0].checkpoints_oldest_first()] == [100, 200, 1000, 300]
    assert lora_catalog.parse_strengths("0 ,0.25; 1") == [0, 0.25, 1]
    for bad, why in (("", "at least one"), ("3", "outside"), ("x", "not a number")):
        with pytest.raises(ValueError, match=why):
            lora_catalog.parse_strengths(bad)


def test_generation_defaults_follow_the_projects_sample_settings(qtbot, tmp_path):
    """The demo preset's CFG 2.5 / 25 steps must reach the Generate tab, not a fixed 7 / 20."""
    from studio import config
    from ui.gen_form import GenerationForm

    cfg = config.load(Path(__file__).parents[2] / "assets" / "presets" / "demo.toml")
    form = GenerationForm()
    qtbot.addWidget(form)
    form.set_defaults(cfg.resolution, cfg.sample_steps, cfg.sample_cfg_scale)
    req = form.request(seed=1)
    assert (req.steps, req.cfg_scale, req.width) == (25, 2.5, 64)


def test_a_selected_history_thumbnail_is_framed_not_barred(qtbot, tmp_path):
    """The history strip draws each image over its whole cell and frames the selected one; Qt's
    icon mode painted the selection as a bar in an empty text line under the picture."""
    from ui.gen_results import THUMB_PX, History

    path = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (220, 30, 30)).save(path)
    history = History()
    qtbot.addWidget(history)
    history.resize(400, history.height())
    history.show()
    history.add(path, text="")
    qtbot.waitUntil(lambda: not history.item(0).icon().isNull(), timeout=5000)
    shot = history.viewport().grab().toImage()
    cell = history.visualItemRect(history.item(0))
    centre = shot.pixelColor(cell.center())
    assert (centre.red(), centre.green(), centre.blue()) == (220, 30, 30)
    assert cell.height() <= THUMB_PX + 10
    highlight = history.palette().highlight().color()
    below = [shot.pixelColor(x, y) for x in range(cell.left(), cell.right())
             for y in range(cell.bottom() + 1, shot.height())]
    assert highlight not in below
    edge = shot.pixelColor(cell.left() + 3, cell.center().y())
    assert edge == highlight  # the frame around the selected thumbnail
