"""Turn a folder the artist dropped or chose into a project (new or existing), without touching it.

The artist's image folder is never copied, moved or written to by this module: the project lives
in the app's data folder (or a chosen location) and its `dataset_dir` points at the images by
absolute path.
"""

from __future__ import annotations

import re
from pathlib import Path

from studio import config, settings
from studio.config import ConfigError, TrainConfig
from studio.dataset import scanner
from studio.dataset.images import EXTENSIONS as IMAGE_EXTENSIONS
from studio.runs.project import PROJECT_FILE, Project


class WorkspaceError(ValueError):
    """A folder that cannot be opened, with what to do about it."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def projects_dir() -> Path:
    return settings.data_dir() / "projects"


def is_project(folder: Path) -> bool:
    return (Path(folder) / PROJECT_FILE).is_file()


def count_images(folder: Path) -> int:
    """Image files the dataset scan would look at: the folder and its kohya `N_name` subfolders."""
    return len(scanner.image_files(Path(folder)))


def slug(name: str) -> str:
    """A file-name-safe, lower-case version of a folder name ("My Ink Style!" -> "my-ink-style")."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text[:60] or "my-style"


def find_project_for(dataset: Path, where: Path | None = None) -> Project | None:
    """An existing project under `where` whose dataset is `dataset` (so a re-drop reopens it)."""
    where = where or projects_dir()
    target = Path(dataset).resolve()
    if not where.is_dir():
        return None
    for candidate in sorted(where.iterdir()):
        if not is_project(candidate):
            continue
        project = Project(candidate)
        try:
            cfg = project.load_config()
        except ConfigError:
            continue  # a damaged project elsewhere must not stop opening this one
        if project.resolve(cfg.dataset_dir).resolve() == target:
            return project
    return None


def create_project(dataset: Path, where: Path | None = None, base_model: str = "") -> Project:
    """A new project folder under `where` for the images in `dataset`, with default settings."""
    dataset = Path(dataset).resolve()
    where = where or projects_dir()
    name = slug(dataset.name)
    root = where / name
    n = 2
    while root.exists():
        root = where / f"{name}-{n}"
        n += 1
    root.mkdir(parents=True)
    values: dict = dict(dataset_dir=str(dataset), output_name=name)
    if base_model:
        values["base_model"] = base_model
        # A new project trains at its base model's native size (the pocket model: 64 px, where
        # the default 512 px took 20+ minutes on a CPU for grey noise, issue 14).
        from studio.base_model import inspect as base_model_inspect

        info = base_model_inspect.inspect(base_model, root)
        if info.ok and info.native_resolution:
            values["resolution"] = info.native_resolution
    project = Project(root)
    project.save_config(config.from_dict(values, TrainConfig()))
    return project


def open_folder(folder: Path, where: Path | None = None, base_model: str = "") -> Project:
    """The project for a dropped/chosen folder: a project folder itself, the project already made
    for this image folder, or a new one. Raises WorkspaceError when the folder can't be used."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise WorkspaceError(f"{folder} is not a folder.",
                             "Drop or choose the folder that holds your images.")
    if is_project(folder):
        return Project(folder.resolve())
    if count_images(folder) == 0:
        nested = [p.name for p in sorted(folder.iterdir()) if p.is_dir() and count_images(p)]
        hint = (f"Images were found in its subfolder(s) {', '.join(nested[:3])}: choose one of "
                f"those, or name them like 10_{nested[0]} (kohya style: 10 repeats per epoch) "
                f"to train them together." if nested else
                f"Choose a folder with {', '.join(IMAGE_EXTENSIONS)} images inside it (or in "
                f"kohya-style subfolders such as 10_mystyle).")
        raise WorkspaceError(f"There are no images in {folder}.", hint)
    return find_project_for(folder, where) or create_project(folder, where, base_model)
