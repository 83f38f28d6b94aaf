"""The settings form generated from TrainConfig: every field present with help and range, values
round-trip, invalid input is shown at its field and blocks Train, the estimate follows the rank."""

from __future__ import annotations

import enum

import pytest

from studio import config
from studio.config import FIELDS, LrSchedule, TrainConfig
from ui.config_form import ConfigForm, apply_raw
from ui.train_settings import ADVANCED, NOT_IN_FORMS
from uihelpers import open_and_wait
from uifixtures import *  # noqa: F403 (pytest fixtures)


def test_every_setting_has_an_editor_with_its_help_and_range(qtbot, window):
    settings = window.train_tab.settings
    for name, f in FIELDS.items():
        if name in NOT_IN_FORMS:
            continue
        editor = settings.editor(name)
        assert editor is not None, name
        tip = editor.editor.toolTip()
        assert f.metadata["help"] in tip, name
        if f.metadata["minimum"] is not None:
            assert f"Range: {f.metadata['minimum']:g} to {f.metadata['maximum']:g}" in tip, name
        if issubclass(config.field_type(name), enum.Enum):
            assert "Choices:" in tip, name
    # A range that follows another setting is in the tooltip too (config.RANGE_RULES).
    assert "(prodigy: 0.001 to 10)" in settings.editor("learning_rate").editor.toolTip()
    assert set(settings.advanced.editors) == set(ADVANCED)
    assert all(FIELDS[n].metadata["advanced"] or n in ADVANCED for n in settings.advanced.editors)


def test_values_round_trip_through_the_form(qtbot):
    names = [n for n in FIELDS if n not in NOT_IN_FORMS]
    form = ConfigForm(names, grouped=True, sliders=("rank",))
    qtbot.addWidget(form)
    cfg = TrainConfig(rank=8, alpha=4.0, learning_rate=3e-4, lr_scheduler=LrSchedule.cosine,
                      gradient_checkpointing=True, seed=2**32 - 1, output_name="ink",
                      sample_prompts=("zxq, a heron, ink", "a boat"), trigger_word="zxq",
                      weight_decay=0.05, target_modules=("to_q", "to_v"))
    form.set_config(cfg)
    out, problems = apply_raw(TrainConfig(), form.raw_values())
    assert problems == [] and out == cfg
    assert form.editors["rank"].slider.value() == 8


def test_invalid_values_are_shown_at_the_field_and_block_training(qtbot, window, clean_art,
                                                                  sd15):
    project = open_and_wait(qtbot, window, clean_art, sd15)
    tab, settings = window.train_tab, window.train_tab.settings
    assert tab.train_button.isEnabled(), tab.reason.text()

    resolution = settings.editor("resolution")
    resolution.editor.setValue(500)
    assert not resolution.error.isHidden() and "multiple of 8" in resolution.error.text()
    assert not tab.train_button.isEnabled() and "resolution" in tab.reason.text()
    resolution.editor.setValue(512)
    assert resolution.error.isHidden() and tab.train_button.isEnabled()

    rate = settings.editor("learning_rate")
    rate.editor.setText("fast")
    assert "must be a number" in rate.error.text() and not tab.train_button.isEnabled()
    window.session.save_now()
    assert project.load_config().learning_rate == 1e-4  # the bad text never reaches the file
    rate.editor.setText("2e-4")
    assert tab.train_button.isEnabled()
    assert window.session.config.learning_rate == 2e-4

    assert not settings.more.content.isVisibleTo(settings)
    settings.editor("target_modules").editor.setPlainText("")
    assert "at least one layer" in settings.editor("target_modules").error.text()
    assert settings.more.content.isVisibleTo(settings)  # an error never hides in a fold
    assert not tab.train_button.isEnabled()


def test_out_of_range_values_from_project_toml_are_shown_not_clamped(qtbot, window, clean_art,
                                                                     sd15):
    project = open_and_wait(qtbot, window, clean_art, sd15)
    window.session.close()
    text = project.config_file.read_text().replace("rank = 16", "rank = 999")
    project.config_file.write_text(text)
    assert window.open_project(project)
    rank = window.train_tab.settings.editor("rank")
    assert rank.editor.value() == 999 and "at most 256" in rank.error.text()
    assert not window.train_tab.train_button.isEnabled()


def test_the_estimate_follows_the_rank(qtbot, window, clean_art, sd15):
    open_and_wait(qtbot, window, clean_art, sd15)
    settings = window.train_tab.settings
    assert "3.19 million" in settings.estimate.text()  # SD1.5 attention LoRA at rank 16
    settings.editor("rank").slider.setValue(4)
    assert window.session.config.rank == 4
    assert "797,184" in settings.estimate.text() and "% of the UNet" in settings.estimate.text()
    assert "Steps:" in settings.estimate.text()


@pytest.mark.parametrize("gpu", [False, True])
def test_the_wording_fits_the_device(qtbot, window, clean_art, sd15, monkeypatch, gpu):
    from ui import device
    from ui.gen_panel import OutputPanel

    monkeypatch.setattr(device, "has_gpu", lambda: gpu)
    open_and_wait(qtbot, window, clean_art, sd15)
    settings = window.train_tab.settings
    settings.editor("rank").slider.setValue(8)  # the estimate again, on this "machine"
    text = settings.estimate.text()
    assert "emory: ≈" not in text  # no rough guess: the memory planner's figure, or none yet
    assert any(w in settings.memory.figure.text() for w in ("GPU memory", "Predicted peak"))
    assert ("runs on the CPU" in text) == (not gpu)
    panel = OutputPanel()
    banner = panel.pause_banner.text()
    assert ("needs the GPU to itself" in banner) == gpu


def test_presets_apply_over_the_current_settings(qtbot, window, clean_art, sd15):
    import tomllib

    open_and_wait(qtbot, window, clean_art, sd15)
    settings = window.train_tab.settings
    window.session.update(trigger_word="inkwash", output_name="ink")
    applied = {}
    for combo in (settings.style_preset, settings.gpu_preset):
        if combo.count() < 2:
            pytest.skip("no presets in assets/presets yet")
        path = combo.itemData(1)
        combo.activated.emit(1)
        applied.update(tomllib.loads(path.read_text()))
    cfg = window.session.config
    for key, value in applied.items():
        if key not in ("base_model", "dataset_dir", "exclude_images", "trigger_word",
                       "output_name"):
            assert config.to_dict(cfg)[key] == value, key
    assert (cfg.trigger_word, cfg.output_name, cfg.base_model) == ("inkwash", "ink", str(sd15))
    assert settings.editor("rank").editor.value() == cfg.rank  # the form shows the result
