"""The demo project: the bundled pocket model and demo style set, with the preset tuned for them."""

from __future__ import annotations

from pathlib import Path

from studio import config
from studio.project import Project

ASSETS = Path(__file__).resolve().parent.parent / "assets"
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
    """Create the demo project (or refresh its settings) and return it.

    `model`/`dataset` replace the bundled assets (the CLI passes a tiny random model when a
    stripped checkout lacks them).
    """
    model = model or POCKET_MODEL
    dataset = dataset or DEMO_STYLE
    if not (Path(model) / "model_index.json").is_file():
        raise FileNotFoundError(f"The demo model is missing: {model}")
    project = Project(Path(out or default_location()).resolve())
    project.root.mkdir(parents=True, exist_ok=True)
    cfg = config.load(DEMO_PRESET) if DEMO_PRESET.is_file() else config.TrainConfig()
    project.save_config(config.from_dict(dict(base_model=str(model), dataset_dir=str(dataset)),
                                         cfg))
    return project
