"""The Generate tab: try the LoRA where it was trained. Prompt, settings and LoRAs on the left;
Generate / Cancel with progress, the image (or with / without, or the epoch × strength grid) and
the history on the right (ui/gen_panel.py). Everything runs in one `python -m training serve`
worker (PreviewWorker), which is stopped while training runs: one GPU worker at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QPushButton, QScrollArea, QSplitter, QVBoxLayout, QWidget

from studio.runs import loras as lora_catalog
from studio.runs.loras import RunLoras
from studio.protocol import GridRequest, MergeRequest, ProtocolError
from ui.adapter_list import AdapterList
from ui.gen_form import GenerationForm
from ui.gen_panel import OutputPanel
from ui.merge_dialog import MergeDialog
from ui.preview_worker import Job, PreviewWorker
from ui.session import ProjectSession
from ui.worker import WorkerProcess


class GenerateTab(QWidget):
    status_message = Signal(str)

    def __init__(self, session: ProjectSession,
                 worker_factory: Callable[[], WorkerProcess] = WorkerProcess, parent=None):
        super().__init__(parent)
        self.session = session
        self.preview = PreviewWorker(worker_factory, self)
        self.paused = False
        self._after_stop: list[Callable[[], None]] = []

        self.form = GenerationForm()
        self.form.submitted.connect(self.generate)
        self.adapters = AdapterList()
        self.adapters.trigger_requested.connect(self._insert_trigger)
        self.adapters.status_message.connect(self.status_message)
        self.adapters.changed.connect(self._update_buttons)
        self.merge_button = QPushButton("Bake into a model…")
        self.merge_button.setToolTip("Merge the enabled LoRAs, at their strengths, into a full "
                                     "model file (for tools without LoRA support, or to share).")
        self.merge_button.clicked.connect(self.open_merge)

        self.output = out = OutputPanel()
        # The panel's parts, by name (the tests and the main window use them).
        self.generate_button, self.cancel_button = out.generate_button, out.cancel_button
        self.progress, self.detail, self.error = out.progress, out.detail, out.error
        self.pause_banner, self.views, self.history = out.pause_banner, out.views, out.history
        self.result, self.compare, self.grid = out.result, out.compare, out.grid
        self.generate_button.clicked.connect(lambda: self.generate())
        self.cancel_button.clicked.connect(self.cancel)
        self.result.status_message.connect(self.status_message)
        self.result.reuse_requested.connect(self.form.apply)
        self.compare.compare_requested.connect(self.compare_with_without)
        self.grid.grid_requested.connect(self.make_grid)
        self.grid.status_message.connect(self.status_message)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 6, 0)
        left_layout.addWidget(self.form)
        left_layout.addWidget(self.adapters, 1)
        left_layout.addWidget(self.merge_button, 0, Qt.AlignmentFlag.AlignLeft)
        left.setMinimumWidth(380)
        scroll = QScrollArea()  # at small heights the settings scroll rather than squash
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.addWidget(scroll)
        self.split.addWidget(out)
        self.split.setChildrenCollapsible(False)
        self.split.splitterMoved.connect(lambda *_: setattr(self, "_user_sized", True))
        self._user_sized = False
        layout = QVBoxLayout(self)
        layout.addWidget(self.split)

        self.preview.state_changed.connect(self._on_state)
        self.preview.progress.connect(out.on_progress)
        self.preview.image_ready.connect(out.on_image)
        self.preview.job_done.connect(self._on_job_done)
        self.preview.job_failed.connect(self._on_job_failed)
        self.preview.idle.connect(self._finish)
        self.preview.stopped.connect(self._on_stopped)
        session.project_changed.connect(self._on_project)
        session.config_changed.connect(self._on_config)
        self._update_buttons()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if not self._user_sized:
            width = self.split.width()
            left = max(400, min(int(width * 0.34), 560))
            self.split.setSizes([left, width - left])

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh_loras()  # a run may have finished or a checkpoint appeared meanwhile

    # --- project ---------------------------------------------------------------------------
    @property
    def out_dir(self) -> Path:
        return self.session.project.root / "generated"

    def _on_project(self, project) -> None:
        self.jobs.clear()
        self.preview.configure(project.root if project else None, self.session.config.base_model)
        self.error.hide()
        if project is None:
            self.adapters.clear()
            self.history.clear()
            return
        cfg = self.session.config
        self.form.set_defaults(cfg.resolution, cfg.sample_steps, cfg.sample_cfg_scale)
        self.adapters.clear()
        self.refresh_loras(enable_newest=True)
        self.history.load_folder(self.out_dir)
        self.result.show_image(None)

    def _on_config(self, cfg) -> None:
        if self.session.project is not None:
            self.preview.configure(self.session.project.root, cfg.base_model)

    def refresh_loras(self, enable_newest: bool = False) -> list[RunLoras]:
        project = self.session.project
        runs = lora_catalog.project_loras(project) if project is not None else []
        self.adapters.set_runs(runs, enable_newest)
        self.grid.set_runs(runs)
        self._update_buttons()
        return runs

    def open_lora(self, path: Path) -> None:
        """"Open in Generate": this LoRA enabled (alone) at strength 1, its trigger word in an
        empty prompt."""
        runs = self.refresh_loras()
        row = self.adapters.select(Path(path))
        if row is None:
            return
        found = lora_catalog.find(runs, Path(path))
        if found is not None:  # its checkpoints are what the grid compares next
            self.grid.select_run(found[0].run)
        row.set_strength(1.0)
        if row.trigger_word and not self.form.prompt.toPlainText().strip():
            self.form.insert_trigger(row.trigger_word)
        self.views.setCurrentWidget(self.result)
        self.form.prompt.setFocus()
        self.status_message.emit(f"{Path(path).name} is enabled: write a prompt and press "
                                 f"Generate.")

    def _insert_trigger(self, word: str) -> None:
        if not self.form.insert_trigger(word):
            self.status_message.emit(f"“{word}” is already in the prompt.")

    # --- actions ---------------------------------------------------------------------------
    def _start(self, jobs: list[Job]) -> bool:
        if self.preview.busy() or self.paused or self.session.project is None:
            return False
        self.output.begin(jobs)
        self.preview.configure(self.session.project.root, self.session.config.base_model)
        self.preview.submit(jobs)
        self._update_buttons()
        return True

    def _submit(self, build: Callable[[], list[Job]]) -> bool:
        """Build the jobs' requests and start them; a request the worker would refuse is shown
        as an error here instead of being sent."""
        try:
            jobs = build()
        except ProtocolError as exc:
            self.output.show_error(str(exc), "Change the setting it names and try again.")
            return False
        return self._start(jobs)

    def generate(self) -> bool:
        def jobs() -> list[Job]:
            req = self.form.request(self.form.seed_for_run(), adapters=self.adapters.adapters(),
                                    out_dir=str(self.out_dir))
            return [Job(req, "Generating", req.count * req.steps, "image")]
        self.views.setCurrentWidget(self.result)
        return self._submit(jobs)

    def compare_with_without(self) -> bool:
        active = self.adapters.active()
        if not active:
            self.status_message.emit("Enable a LoRA first: with / without compares it against "
                                     "the base model.")
            return False

        def jobs() -> list[Job]:
            req = self.form.request(self.form.seed_for_run(), count=1, out_dir=str(self.out_dir))
            label = ", ".join(f"{name} {strength:g}" for _, strength, name in active)
            self.compare.begin(label, req.seed)
            return [Job(replace(req, adapters=self.adapters.adapters()), "With LoRA", req.steps,
                        "with"),
                    Job(replace(req, adapters=[]), "Without LoRA", req.steps, "without")]
        self.views.setCurrentWidget(self.compare)
        return self._submit(jobs)

    def make_grid(self, run: RunLoras, strengths: list[float]) -> bool:
        def jobs() -> list[Job]:
            rows = run.checkpoints_oldest_first()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            req = self.form.request(self.form.seed_for_run()).as_request(
                GridRequest, checkpoints=[str(f.path) for f in rows], strengths=strengths,
                out=str(self.out_dir / "grids" / f"grid-{run.name}-{stamp}.png"))
            job = Job(req, "Grid", len(rows) * len(strengths) * req.steps, "grid")
            job.labels = ([f.label for f in rows], [f"strength {s:g}" for s in strengths],
                          (req.width, req.height))
            return [job]
        self.views.setCurrentWidget(self.grid)
        return self._submit(jobs)

    def open_merge(self) -> None:
        active = self.adapters.active()
        if not active or self.session.project is None:
            return
        dialog = MergeDialog(self.session.config.base_model, active,
                             self.session.project.root / "merged", self)
        dialog.accepted.connect(lambda: self.merge(dialog.command_args()))
        dialog.open()

    def merge(self, args: dict) -> bool:
        """Bake the LoRAs in: `args` are the merge dialog's answers (a MergeRequest's fields)."""
        def jobs() -> list[Job]:
            req = MergeRequest(**args)
            Path(req.out).parent.mkdir(parents=True, exist_ok=True)
            return [Job(req, "Merging", 0, "merge")]
        return self._submit(jobs)

    def cancel(self) -> None:
        self.preview.cancel()
        self.detail.setText("Cancelling after this step…")

    # --- worker events ---------------------------------------------------------------------
    @property
    def jobs(self) -> list[Job]:
        return self.output.jobs

    def _on_state(self, state: str) -> None:
        self.output.on_state(state, self.preview.current)
        self._update_buttons()

    def _on_job_done(self, job: Job, done) -> None:
        message = self.output.on_job_done(job, done)
        if message:
            self.status_message.emit(message)

    def _on_job_failed(self, job: Job, message: str, hint: str) -> None:
        if self.paused or message == "Stopped.":
            self.detail.setText("Stopped.")
            return
        self.output.show_error(message, hint)
        self.status_message.emit(message.splitlines()[0])

    def _finish(self) -> None:
        self.output.finish()
        self._update_buttons()

    # --- one GPU worker at a time ----------------------------------------------------------
    def set_training(self, running: bool) -> None:
        """The Train tab's worker started or ended: pause (stop the worker) or allow again."""
        self.paused = running
        self.output.set_paused(running)
        if running:
            self.preview.stop()
        self._update_buttons()

    def free_gpu(self, proceed: Callable[[], None]) -> bool:
        """Before training starts: True when no preview worker runs; otherwise stop it, call
        `proceed` once it has exited, and return False."""
        if not self.preview.is_running():
            return True
        self.set_training(True)
        self._after_stop.append(proceed)
        self.preview.stop()
        return False

    def _on_stopped(self) -> None:
        pending, self._after_stop = self._after_stop, []
        for proceed in pending:
            proceed()
        self._update_buttons()

    def shutdown(self) -> None:
        self.preview.shutdown()

    def _update_buttons(self, *_) -> None:
        busy = self.preview.busy() or bool(self.jobs)
        can = not busy and not self.paused and self.session.project is not None
        active = bool(self.adapters.active())
        self.generate_button.setEnabled(can)
        current = self.preview.current
        self.cancel_button.setEnabled(busy and self.preview.state != "stopping" and not (
            current is not None and current.kind == "merge"))  # a merge runs to its end
        self.compare.button.setEnabled(can and active)
        self.compare.button.setToolTip(
            "Render the same seed twice, with the enabled LoRAs and with none, side by side."
            if active else "Enable a LoRA on the left to compare it with the base model.")
        self.merge_button.setEnabled(can and active)
        self.grid.set_busy(not can)
