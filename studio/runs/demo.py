"""The demo project: the bundled pocket model and demo style set, with the preset tuned for them."""

from __future__ import annotations

from pathlib import Path

from studio import config
from studio.runs.project import Project

ASSETS = Path(__file__).resolve().parents[2] / "assets"
POCKET_MODEL = ASSETS / "pocket-model"
DEMO_STYLE = ASSETS / "demo-style"
DEMO_PRESET = ASSETS / "presets" / "demo.toml"


def assets_present() -> bool:
    return (POCKET_MODEL / "model_index.json").is_file() and any(DEMO_STYLE.glob("*.png"))


def default_location() -> Path:
    from studio.settings import data_dir

    return data_dir() / "demo-project"


def create_demo_project(out: Path | None = None, model: Path | None = None,
                        dataset: Path | None = None) -> Project:
    """Create the demo project, or reopen it with the artist's own settings kept, and return it.

    A new project gets the demo preset. An existing one keeps every setting the artist changed;
    only a model or dataset path that no longer exists (the checkout moved) is pointed back at
    the bundled assets. `model`/`dataset` replace the bundled assets (the CLI passes a tiny random
    model when a stripped checkout lacks them).
    """
    model = Path(model or POCKET_MODEL)
    dataset = Path(dataset or DEMO_STYLE)
    if not (model / "model_index.json").is_file():
        raise FileNotFoundError(f"The demo model is missing: {model}")
    project = Project(Path(out or default_location()).resolve())
    project.root.mkdir(parents=True, exist_ok=True)
    if project.config_file.is_file():
        cfg = project.load_config()
        moved = {key: str(path) for key, path, given in (
            ("base_model", model, cfg.base_model), ("dataset_dir", dataset, cfg.dataset_dir))
            if Path(given).is_absolute() and not Path(given).exists()}  # never a hub id
        if moved:
            project.save_config(config.from_dict(moved, cfg))
        return project
    cfg = config.load(DEMO_PRESET) if DEMO_PRESET.is_file() else config.TrainConfig()
    project.save_config(config.from_dict(dict(base_model=str(model), dataset_dir=str(dataset)),
                                         cfg))
    return project
