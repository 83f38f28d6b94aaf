"""The right side of the Generate tab: Generate / Cancel, progress per denoising step and image,
the pause banner and errors, the views (image, with / without, grid) and the history. It only
presents what the preview worker reports; the tab decides what to run."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QProgressBar, QPushButton, QTabWidget,
                               QVBoxLayout, QWidget)

from ui import device, theme
from ui.gen_results import History, ResultView
from ui.gen_views import CompareView, GridView
from ui.preview_worker import Job

PAUSED_TEXT = ("<b>Preview paused while training.</b> Training needs the GPU to itself; "
               "generation starts again when the run ends.")
PAUSED_TEXT_CPU = ("<b>Preview paused while training.</b> Training uses the CPU fully; "
                   "generation starts again when the run ends.")


class OutputPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.jobs: list[Job] = []  # the jobs of the current action (with/without is two)
        self.done_units = 0
        self.started_at = 0.0
        self.generate_button = QPushButton("Generate")
        theme.set_role(self.generate_button, "primary")
        self.generate_button.setToolTip("Make images with this prompt and the enabled LoRAs "
                                        "(Ctrl+Return).")
        self.generate_button.setShortcut("Ctrl+Return")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current denoising step.")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Ready")
        self.progress.setTextVisible(True)
        self.detail = QLabel(" ")
        theme.set_role(self.detail, "muted")
        self.pause_banner = QLabel(PAUSED_TEXT if device.has_gpu() else PAUSED_TEXT_CPU)
        self.pause_banner.setWordWrap(True)
        theme.set_role(self.pause_banner, "banner-warning")
        self.pause_banner.hide()
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        theme.set_role(self.error, "error")
        self.error.hide()
        self.result = ResultView()
        self.compare = CompareView()
        self.grid = GridView()
        self.views = QTabWidget()
        self.views.addTab(self.result, "Image")
        self.views.addTab(self.compare, "With / without")
        self.views.addTab(self.grid, "Epoch × strength grid")
        self.history = History()
        self.history.image_selected.connect(self._show_history_image)

        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.detail)
        layout.addWidget(self.pause_banner)
        layout.addWidget(self.error)
        layout.addWidget(self.views, 1)
        layout.addWidget(QLabel("<b>History</b>"))
        layout.addWidget(self.history)

    def begin(self, jobs: list[Job]) -> None:
        self.jobs, self.done_units = jobs, 0
        self.started_at = time.monotonic()
        self.error.hide()
        self.progress.setRange(0, max(1, sum(j.units for j in jobs)))
        self.progress.setValue(0)
        self.progress.setFormat("%p%")

    def set_paused(self, paused: bool) -> None:
        self.pause_banner.setVisible(paused)

    # --- what the worker reports -----------------------------------------------------------
    def on_state(self, state: str, job: Job | None) -> None:
        if state == "loading":
            self.progress.setRange(0, 0)  # busy: loading takes seconds to minutes
            self.detail.setText("Starting the preview: loading the base model (the first time "
                                "takes a while)…")
        elif state == "busy" and self.jobs:
            total = sum(j.units for j in self.jobs)
            self.progress.setRange(0, total)  # 0: busy (a merge has no steps to count)
            self.progress.setValue(self.done_units)
            self.detail.setText(f"{job.label}…" if job else " ")

    def on_progress(self, job: Job, event) -> None:
        if self.progress.maximum() == 0:
            return
        self.progress.setValue(self.done_units + event.image * event.total + event.step)
        self.progress.setFormat(f"Image {event.image + 1}/{event.count} · step {event.step}/"
                                f"{event.total}")
        self.detail.setText(f"{job.label} · {time.monotonic() - self.started_at:.1f} s")

    def on_image(self, job: Job, event) -> None:
        if job.role == "grid":
            self.grid.show_grid(Path(event.path), *job.labels)
            return
        # The parameters shown are the PNG's own (what other tools will read), not the event's.
        self.history.add(Path(event.path), select=job.role == "image")
        if job.role in ("with", "without"):
            self.compare.show_side(job.role, Path(event.path), event.seed)

    def on_job_done(self, job: Job, done) -> str:
        """Returns a message for the status bar ("" for none)."""
        self.done_units += job.units
        if done.cancelled:
            self.detail.setText("Cancelled.")
        elif job.role == "merge" and done.paths:
            self.detail.setText(f"Merged model saved: {done.paths[0]}")
            return f"Merged model saved: {done.paths[0]}"
        return ""

    def show_error(self, message: str, hint: str) -> None:
        text = f"<b>{message}</b>" + (f"<br>{hint}".replace("\n", "<br>") if hint else "")
        self.error.setText(text)
        self.error.show()

    def finish(self) -> None:
        """The action is over (done, cancelled or failed)."""
        cancelled = self.detail.text().startswith(("Cancel", "Stopped"))
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        if not cancelled and self.error.isHidden() and self.jobs:
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat("Done")
            if self.jobs[-1].role != "merge":
                self.detail.setText(f"Done in {time.monotonic() - self.started_at:.1f} s.")
        self.jobs = []

    def _show_history_image(self, path: Path, text: str) -> None:
        self.result.show_image(path, text)
        if self.views.currentWidget() is not self.result and not self.jobs:
            self.views.setCurrentWidget(self.result)
