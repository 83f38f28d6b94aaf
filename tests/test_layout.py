"""The code explains itself: every module says what it is for, no file grows past 500 lines, and
CONTRIBUTING.md's module map is the one `scripts/module_map.py` builds from the docstrings."""

from __future__ import annotations

import ast
import runpy

import pytest

from conftest import ROOT

PRODUCT = sorted(p for package in ("studio", "training", "ui") for p in (ROOT / package).rglob("*.py"))
MAX_LINES = 500


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_is_small_and_says_what_it_is_for(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES, "split it by responsibility"
    if path.name != "__init__.py" or text.strip():
        assert ast.get_docstring(ast.parse(text)), "open the module with a one-line docstring"


def test_contributing_holds_the_current_module_map():
    tool = runpy.run_path(str(ROOT / "scripts" / "module_map.py"), run_name="module_map")
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert tool["with_map"](text) == text, "run `python scripts/module_map.py --write`"
