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
    def loras(self) -> Path:
        """LoRA files saved during training (`<name>-stepNNNNNN.safetensors`), to compare stages."""
        return self.path / "loras"

    @property
    def resume(self) -> Path:
        """Resume-point folders (`step-NNNNNN/`): the state to continue training exactly."""
        return self.path / "resume"

    @property
    def legacy(self) -> Path:
        """Where runs made before the split kept both kinds (`checkpoints/`); still read."""
        return self.path / "checkpoints"

    def resume_points(self) -> list[Path]:
        """Complete-looking resume-point folders (with state.json), oldest step first."""
        found = [p for folder in (self.legacy, self.resume) for p in folder.glob("step-*")
                 if (p / "state.json").is_file()]
        return sorted(found, key=lambda p: p.name)

    def lora_files(self) -> list[Path]:
        """The LoRA files saved during training (not the final one), in name order."""
        return sorted(p for folder in (self.legacy, self.loras)
                      for p in folder.glob("*.safetensors"))

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
        """A fresh `runs/<start time>` folder. Only the worker calls this: it owns the run folder
        (the GUI learns the folder from the worker's first status event)."""
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
