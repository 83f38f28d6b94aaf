"""The Train tab adapts to the base model: SDXL and single files enable Train, Resolution follows
the model while the artist left it at the model's size, otherwise a warning offers the fix, and
the matching style recipe is marked."""

from __future__ import annotations

from pathlib import Path

from studio.config import PredictionType
from test_base_model_detect import SD2, SDXL, write
from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import open_and_wait

ROOT = Path(__file__).resolve().parents[2]
POCKET = ROOT / "assets" / "pocket-model"


def choose(qtbot, settings, value: str) -> None:
    """What typing a path into the model box does (the picker's debounce, then `changed`)."""
    settings.model.combo.setEditText(value)
    qtbot.waitUntil(lambda: settings.model.info.path is not None and
                    settings.session.config.base_model == value, timeout=3000)


def test_an_sdxl_single_file_enables_train_at_1024(qtbot, window, clean_art, sd15, tmp_path):
    xl = write(tmp_path / "noob-vpred.safetensors", {**SDXL, "v_pred": ("F16", [0])})
    open_and_wait(qtbot, window, clean_art, sd15)
    tab, settings = window.train_tab, window.train_tab.settings
    assert window.session.config.resolution == 512 and tab.train_button.isEnabled()
    choose(qtbot, settings, str(xl))
    # The artist never touched Resolution (it was SD1.5's 512): it follows the model.
    assert window.session.config.resolution == 1024
    assert settings.editor("resolution").editor.value() == 1024
    assert tab.train_button.isEnabled(), tab.reason.text()
    status = settings.model.status.text()
    assert "SDXL" in status and "v-prediction" in status and "single file" in status
    styles = [settings.style_preset.itemText(i) for i in range(settings.style_preset.count())]
    assert "Style SDXL (suggested)" in styles and "Style SD 1.5" in styles
    assert settings.resolution_hint.isHidden()

    # A size the artist chose is theirs: a warning with a one-click fix, never a silent change.
    window.session.update(resolution=512)
    assert not settings.resolution_hint.isHidden()
    assert "1024 px" in settings.resolution_hint.text()
    assert settings.resolution_fix.text() == "Use 1024 px"
    settings.resolution_fix.click()
    assert window.session.config.resolution == 1024 and settings.resolution_hint.isHidden()

    choose(qtbot, settings, str(POCKET))  # 1024 was SDXL's size: follows to 64
    assert window.session.config.resolution == 64
    window.session.update(resolution=96)
    choose(qtbot, settings, str(xl))  # 96 was chosen: kept, with the warning
    assert window.session.config.resolution == 96
    assert not settings.resolution_hint.isHidden() and tab.train_button.isEnabled()


def test_the_worker_refusal_is_what_the_window_shows(qtbot, window, clean_art, sd15, tmp_path):
    """An SD2 file that doesn't say what it predicts: Train waits for the Prediction type
    setting, with the worker's own words; setting it enables Train."""
    sd2 = write(tmp_path / "sd2.safetensors", SD2)
    open_and_wait(qtbot, window, clean_art, sd15)
    tab, settings = window.train_tab, window.train_tab.settings
    choose(qtbot, settings, str(sd2))
    assert not tab.train_button.isEnabled()
    assert "choose the prediction type" in tab.reason.text()
    assert "Set Prediction type" in settings.model.status.text()
    window.session.update(prediction_type=PredictionType.v_prediction)
    assert tab.train_button.isEnabled(), tab.reason.text()
    # 512 stays (the model was refused when chosen); 768-v's size is offered instead.
    assert window.session.config.resolution == 512
    assert not settings.resolution_hint.isHidden() and "768 px" in settings.resolution_hint.text()


def test_bake_in_offers_the_formats_the_merge_writes(qtbot, tmp_path):
    """SDXL and SD1 bake into one file (or a folder); SD2 only into a folder."""
    from ui.merge_dialog import MergeDialog

    lora = [(tmp_path / "style.safetensors", 0.8, "style")]
    xl = write(tmp_path / "xl.safetensors", SDXL)
    dialog = MergeDialog(str(xl), lora, tmp_path / "merged")
    qtbot.addWidget(dialog)
    assert dialog.format() == "safetensors" and dialog.out.text().endswith(".safetensors")
    assert all(b.isEnabled() for b in dialog.format_group.buttons())
    sd2 = write(tmp_path / "sd2.safetensors", SD2)
    dialog = MergeDialog(str(sd2), lora, tmp_path / "merged")
    qtbot.addWidget(dialog)
    assert dialog.format() == "diffusers" and not dialog.out.text().endswith(".safetensors")
    assert dialog.command_args()["format"] == "diffusers"
