"""App settings (recent projects and models, LoRA folders, window state) in platformdirs locations.

A settings file can be edited by hand, half-written by an old version or damaged; none of that may
stop the app. `load` therefore never raises: every value is checked, a bad one falls back to its
default, and what was wrong is returned as `warnings` so the app can say so once.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from studio import atomic

APP_NAME = "LoRA Studio"
MAX_RECENT = 10
# Tests and portable installs point everything (settings and projects) at one folder.
HOME_ENV = "LORA_STUDIO_HOME"


def config_dir() -> Path:
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]) / "config"
    import platformdirs

    return platformdirs.user_config_path(APP_NAME, appauthor=False)


def data_dir() -> Path:
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]) / "data"
    import platformdirs

    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def default_path() -> Path:
    return config_dir() / "settings.toml"


@dataclass
class AppSettings:
    last_project: str = ""
    recent_projects: list[str] = field(default_factory=list)
    recent_models: list[str] = field(default_factory=list)
    # Folders the artist copies finished LoRAs to (ComfyUI models/loras, A1111 models/Lora, ...).
    lora_folders: list[str] = field(default_factory=list)
    window_geometry: str = ""  # QMainWindow.saveGeometry() as hex; opaque to this module
    # The card the Train tab predicts GPU memory for: "detected" (this machine's GPU) or its
    # size in GB ("8"); "" = this machine's GPU, else an 8 GB card (ui/device.py).
    planner_gpu: str = ""
    warnings: list[str] = field(default_factory=list, compare=False, metadata={"transient": True})

    def remember_project(self, path: Path | str) -> None:
        self.last_project = str(path)
        self.recent_projects = _push(self.recent_projects, str(path))

    def remember_model(self, value: str) -> None:
        if value.strip():
            self.recent_models = _push(self.recent_models, value.strip())

    def remember_lora_folder(self, path: Path | str) -> None:
        self.lora_folders = _push(self.lora_folders, str(path))

    def forget_project(self, path: Path | str) -> None:
        self.recent_projects = [p for p in self.recent_projects if p != str(path)]
        if self.last_project == str(path):
            self.last_project = ""


def _push(items: list[str], item: str) -> list[str]:
    return [item, *[i for i in items if i != item]][:MAX_RECENT]


def _persisted() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(AppSettings) if not f.metadata.get("transient")]


def load(path: Path | None = None) -> AppSettings:
    """The settings at `path`; defaults for anything missing or invalid (never raises)."""
    path = path or default_path()
    settings = AppSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return settings
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        settings.warnings.append(f"The settings file {path} could not be read ({exc}); "
                                 f"starting with default settings.")
        return settings
    for f in _persisted():
        if f.name not in data:
            continue
        value, default = data[f.name], getattr(settings, f.name)
        if isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            value = value[:MAX_RECENT] if ok else value
        else:
            ok = isinstance(value, str)
        if ok:
            setattr(settings, f.name, value)
        else:
            settings.warnings.append(f"Ignored the setting {f.name!r} in {path}: unexpected "
                                     f"value {value!r}.")
    return settings


def save(settings: AppSettings, path: Path | None = None) -> None:
    """Write atomically, so a crash mid-write leaves the previous settings intact."""
    path = path or default_path()
    data = {f.name: getattr(settings, f.name) for f in _persisted()}
    atomic.write_text(path, tomli_w.dumps(data))
