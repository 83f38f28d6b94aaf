"""A project folder: project.toml (the current settings), the dataset, and runs/<stamp>/."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from studio import atomic, config
from studio.config import TrainConfig

PROJECT_FILE = "project.toml"


@dataclass(frozen=True)
class RunDir:
    """One training run's folder; the config in it is the exact one used, never edited."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def adapter(self, output_name: str) -> Path:
        return self.path / f"{output_name}.safetensors"


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / PROJECT_FILE

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def load_config(self) -> TrainConfig:
        if not self.config_file.is_file():
            return TrainConfig()
        return config.load(self.config_file)

    def save_config(self, cfg: TrainConfig) -> None:
        atomic.write_text(self.config_file, config.to_toml(cfg))

    def resolve(self, value: str) -> Path:
        """A path setting: absolute as given, relative to the project folder otherwise."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    def new_run(self) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(100):
            path = self.runs / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir(parents=True)
            except FileExistsError:
                continue
            return RunDir(path)
        raise RuntimeError(f"could not create a run folder in {self.runs}")

    def list_runs(self) -> list[RunDir]:
        if not self.runs.is_dir():
            return []
        return [RunDir(p) for p in sorted(self.runs.iterdir()) if (p / "config.toml").is_file()]
