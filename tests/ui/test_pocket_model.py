"""An artist's own folder with the bundled pocket model: trains at the model's native 64 px, and
the form says it is a demo model, with the way to a real one (issue 14)."""

from __future__ import annotations

import pytest

from studio.runs import demo
from uifixtures import *  # noqa: F403 (pytest fixtures)
from uihelpers import open_and_wait

pytestmark = pytest.mark.skipif(not demo.assets_present(), reason="no bundled pocket model")


def test_the_pocket_model_trains_at_64_px_and_says_it_is_a_demo_model(qtbot, window, clean_art,
                                                                      sd15):
    window.store.data.recent_models = [str(demo.POCKET_MODEL)]  # e.g. after the demo
    open_and_wait(qtbot, window, clean_art)  # the artist's own folder: a new project
    assert window.session.config.base_model == str(demo.POCKET_MODEL)
    assert window.session.config.resolution == 64  # its native size, not 512
    picker = window.train_tab.settings.model
    assert picker.is_pocket_model()
    assert not picker.pocket_note.isHidden() and "64 px demo model" in picker.pocket_note.text()
    assert not picker.own_model.isHidden()
    assert [a.text() for a in picker.own_model.menu().actions()] == [
        "A .safetensors file…", "A diffusers folder…"]
    window.session.update(base_model=str(sd15))
    picker.set_value(str(sd15), window.session.project.root)
    assert picker.pocket_note.isHidden() and picker.own_model.isHidden()
