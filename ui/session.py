"""ProjectSession: the open project, its current settings and its dataset report, as Qt signals.

Both tabs edit one TrainConfig (the Dataset tab its exclusions and trigger word, the Train tab the
rest); they never talk to each other, only to this object, which saves project.toml (atomically,
debounced while the artist types) and tells everyone what changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import shiboken6
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoStack

from studio.config import ConfigError, TrainConfig
from studio.dataset import summary
from studio.dataset.report import Report
from studio.runs.project import Project
from ui.background import run_in_background

SAVE_DELAY_MS = 400


class ProjectSession(QObject):
    project_changed = Signal(object)  # Project | None
    config_changed = Signal(object)  # TrainConfig
    report_changed = Signal(object)  # dataset.report.Report | None (None: being examined)
    error = Signal(str, str)  # message, hint

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.config = TrainConfig()
        self.report: Report | None = None
        self.undo_stack = QUndoStack(self)
        self._generation = 0  # ignores reports of a dataset that has since been re-examined
        self._save_timer = QTimer(self, singleShot=True, interval=SAVE_DELAY_MS,
                                  timeout=self.save_now)

    def open(self, project: Project) -> None:
        """Load a project's settings; raises ConfigError (naming each bad key) if broken."""
        cfg = project.load_config()
        self.save_now()
        self.project, self.config = project, cfg
        self.undo_stack.clear()
        self.project_changed.emit(project)
        self.config_changed.emit(cfg)
        self.rescan()

    def close(self) -> None:
        self.save_now()
        self.project, self.report = None, None
        self.undo_stack.clear()
        self.project_changed.emit(None)

    @property
    def dataset_dir(self) -> Path | None:
        return self.project.resolve(self.config.dataset_dir) if self.project else None

    def set_config(self, cfg: TrainConfig, save_delay: bool = True) -> None:
        if cfg == self.config:
            return
        old = self.config
        self.config = cfg
        if save_delay:
            self._save_timer.start()
        else:
            self.save_now()
        self.config_changed.emit(cfg)
        if old.dataset_dir != cfg.dataset_dir:
            self.rescan()
        elif self.report is not None and (old.exclude_images != cfg.exclude_images
                                          or old.resolution != cfg.resolution
                                          or old.upscale_small_images != cfg.upscale_small_images
                                          or old.repeats != cfg.repeats):
            # No re-scan: exclusions and the top folder's repeats only change what counts, and
            # the image sizes are known.
            self.report = dataclasses.replace(self.report, repeats=cfg.repeats,
                                              excluded=frozenset(cfg.exclude_images))
            if (old.resolution, old.upscale_small_images) != (cfg.resolution,
                                                              cfg.upscale_small_images):
                summary.update_resolution(self.report, cfg.resolution, cfg.upscale_small_images)
            self.report_changed.emit(self.report)

    def update(self, **changes) -> None:
        self.set_config(dataclasses.replace(self.config, **changes))

    def save_now(self) -> None:
        self._save_timer.stop()
        if self.project is not None:
            try:
                self.project.save_config(self.config)
            except OSError as exc:
                self.error.emit(f"Could not save the settings: {exc}",
                                "Check that the project folder is writable.")

    def rescan(self) -> None:
        """Examine the dataset off the GUI thread (the scan decodes every image)."""
        if self.project is None:
            return
        self._generation += 1
        generation = self._generation
        self.report = None
        self.report_changed.emit(None)
        folder, cfg = self.dataset_dir, self.config
        run_in_background(
            lambda: summary.examine(folder, cfg.exclude_images, cfg.resolution, cfg.repeats,
                                    cfg.upscale_small_images),
            lambda report: self._on_report(generation, report),
            lambda exc: self.error.emit(f"Could not examine the dataset: {exc}",
                                        "Check that the dataset folder is readable."))

    def _on_report(self, generation: int, report: Report) -> None:
        if generation != self._generation or not shiboken6.isValid(self):
            return  # re-examined since, or the window closed while the scan ran
        self.report = dataclasses.replace(report, excluded=frozenset(self.config.exclude_images))
        self.report_changed.emit(self.report)

    def reload_config(self) -> None:
        """Re-read project.toml (e.g. after another program edited it)."""
        if self.project is not None:
            try:
                self.set_config(self.project.load_config(), save_delay=False)
            except ConfigError as exc:
                self.error.emit(str(exc), "Fix project.toml or reset the settings.")
