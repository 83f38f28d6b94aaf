"""The package layering, for every module: read from the source (lazy imports included) and proved
in clean interpreters.

The rules (CONTRIBUTING.md, "Layering"):
- `studio/` is the core: it imports neither Qt, nor the ML stack, nor `ui`/`training`;
- `training/` is the worker: it never imports Qt or `ui`;
- `ui/` is the app: it never imports the ML stack or `training` (it runs the worker as a process);
- nothing in the product imports `benchmarks`, `scripts` or `tests`.
The module lists are walked from the packages, so a new module is covered the day it is added.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

ML = {"torch", "diffusers", "peft", "accelerate", "transformers", "safetensors", "bitsandbytes",
      "torchao", "prodigyopt", "huggingface_hub"}
QT = {"PySide6", "shiboken6"}
OUTSIDE = {"benchmarks", "scripts", "tests", "conftest"}
FORBIDDEN = {
    "studio": ML | QT | {"ui", "training"} | OUTSIDE,
    "training": QT | {"ui"} | OUTSIDE,
    "ui": ML | {"training"} | OUTSIDE,
}


def modules(package: str) -> list[str]:
    """Every module of a top-level package, found on disk (never a hand-kept list)."""
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
        found.append(info.name)
    return sorted(found)


def source_of(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_roots(module: str) -> dict[str, int]:
    """Top-level names of every import statement in the module (function bodies too) -> line."""
    tree = ast.parse(source_of(module).read_text(encoding="utf-8"))
    roots: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                roots.setdefault(alias.name.split(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.setdefault(node.module.split(".")[0], node.lineno)
    return roots


ALL = [m for package in FORBIDDEN for m in modules(package)]


def test_the_walk_finds_the_packages():
    assert len(ALL) > 60 and "studio.config" in ALL and "ui.main_window" in ALL


@pytest.mark.parametrize("module", ALL)
def test_imports_respect_the_layers(module):
    forbidden = FORBIDDEN[module.split(".")[0]]
    bad = {name: line for name, line in imported_roots(module).items() if name in forbidden}
    assert not bad, f"{source_of(module).relative_to(ROOT)} imports {bad} (name: line)"


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


def test_every_studio_module_loads_without_qt_or_torch():
    # One clean interpreter for all of them: indirect imports (a dependency that pulls torch in)
    # are caught here, which the source walk above cannot see.
    loaded = loaded_after("\n".join(f"import {m}" for m in modules("studio")))
    assert not loaded & (ML | QT | {"ui", "training"})


def test_training_never_imports_qt():
    loaded = loaded_after("import training.train, training.export, training.__main__")
    assert "torch" in loaded  # the probe really imported the worker
    assert not loaded & (QT | {"ui"})


def test_bad_input_is_reported_without_loading_the_ml_stack():
    # The CLI checks settings and data before importing torch (≈7 s), so errors come at once.
    loaded = loaded_after("import training.__main__ as m, training.events")
    assert not loaded & ML
