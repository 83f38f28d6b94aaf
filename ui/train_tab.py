"""The Train tab: settings on the left; Train/Stop, the live run (or a run's report card), the log
and past runs on the right. It owns the WorkerProcess of the current run, and of the report card
made after it (ui/evaluation.py), so one GPU worker runs at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QLabel, QPushButton, QSplitter,
                               QSystemTrayIcon, QTabWidget, QVBoxLayout, QWidget)

from studio import config, protocol
from studio.runs import report_card
from ui import outputs, theme
from ui.app_settings import SettingsStore
from ui.evaluation import Evaluation
from ui.report_card_view import ReportCardView
from ui.run_panel import RunPanel
from ui.runs_list import RunsList
from ui.session import ProjectSession
from ui.train_settings import TrainSettings
from ui.worker import WorkerProcess

WorkerFactory = Callable[[], WorkerProcess]


class TrainTab(QWidget):
    status_message = Signal(str)
    running_changed = Signal(bool)
    run_finished = Signal(int, bool)  # exit code, crashed (after the view is updated)
    open_in_generate = Signal(object)  # the finished run's LoRA file

    def __init__(self, session: ProjectSession, store: SettingsStore,
                 worker_factory: WorkerFactory = WorkerProcess, parent=None):
        super().__init__(parent)
        self.session, self.store, self.worker_factory = session, store, worker_factory
        self.worker: WorkerProcess | None = None
        # Called before a run starts with a callback that starts it: returns False when the GPU
        # must first be freed (the Generate tab's worker stopping), and calls back once it is.
        self.before_start: Callable[[Callable[[], None]], bool] | None = None
        self.waiting_for_gpu = False
        self.settings = TrainSettings(session, store, worker_factory)
        self.settings.validity_changed.connect(self.update_train_button)
        self.settings.status_message.connect(self.status_message)
        self.running_changed.connect(self.settings.memory.planner.set_paused)
        self.panel = RunPanel()
        self.panel.field_requested.connect(self.settings.focus_field)
        self.panel.banner.show_button.clicked.connect(self._show_result)
        self.panel.banner.open_button.clicked.connect(
            lambda: self.panel.adapter and self.open_in_generate.emit(self.panel.adapter))
        self.panel.banner.copy_button.setMenu(outputs.copy_menu(
            self, lambda: self.panel.adapter, store, self.status_message.emit))
        self.runs = RunsList(store)
        self.runs.status_message.connect(self.status_message)
        self.runs.resume_requested.connect(lambda run: self.start_training(resume=run))
        self.report = ReportCardView(store)
        self.report.status_message.connect(self.status_message)
        self.report.use_file.connect(self.open_in_generate)
        self.report.evaluate_requested.connect(self.start_evaluation)
        self.report.cancel_requested.connect(self.stop_training)
        self.evaluation = Evaluation(worker_factory, self)
        self.evaluation.progress.connect(self._on_evaluation_progress)
        self.evaluation.finished.connect(self._on_evaluation_finished)
        self._after_evaluation: tuple[int, bool] | None = None  # the run's outcome, held back
        self.runs.report_requested.connect(self.show_report)
        self.panel.banner.report_button.clicked.connect(
            lambda: self.panel.run_dir and self.show_report(self.panel.run_dir))
        self.panel.fix_requested.connect(self._apply_fix)

        self.train_button = QPushButton("Train")
        theme.set_role(self.train_button, "primary")
        self.train_button.setToolTip("Start training with these settings (Ctrl+Return). Each run "
                                     "gets its own folder; earlier LoRAs are kept.")
        self.train_button.setShortcut("Ctrl+Return")
        self.train_button.clicked.connect(lambda: self.start_training())  # not clicked(bool)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step and save the LoRA trained so "
                                    "far.")
        self.stop_button.clicked.connect(self.stop_training)
        self.reason = QLabel()
        self.reason.setWordWrap(True)
        theme.set_role(self.reason, "warning")

        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.reason, 1)
        lower = QTabWidget()
        lower.addTab(self.panel.log, "Log")
        lower.addTab(self.runs, "Runs")
        self.lower = lower
        right_split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(buttons)
        self.views = QTabWidget()  # the live run, or a run's report card (more room than below)
        self.views.setDocumentMode(True)
        self.views.addTab(self.panel, "Run")
        self.views.addTab(self.report, "Report card")
        top_layout.addWidget(self.views)
        right_split.addWidget(top)
        right_split.addWidget(lower)
        right_split.setStretchFactor(0, 4)
        right_split.setStretchFactor(1, 1)
        right_split.setChildrenCollapsible(False)
        self.right_split = right_split
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.settings)
        split.addWidget(right_split)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setChildrenCollapsible(False)
        split.splitterMoved.connect(lambda *_: setattr(self, "_user_sized", True))
        self.split, self._user_sized = split, False
        self.settings.setMinimumWidth(420)
        layout = QVBoxLayout(self)
        layout.addWidget(split)

        session.project_changed.connect(self._on_project)
        session.report_changed.connect(lambda _: self.update_train_button())
        session.config_changed.connect(lambda _: self.update_train_button())
        self.update_train_button()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if not self._user_sized:  # about a third for settings, until the artist drags it
            width = self.split.width()
            left = max(420, min(int(width * 0.36), 640))
            self.split.setSizes([left, width - left])

    def _on_project(self, project) -> None:
        self.runs.set_project(project)
        self.settings.model.set_recent(self.store.data.recent_models)
        self.update_train_button()

    def is_running(self) -> bool:
        """Training, or making the report card after it: the GPU worker of this tab."""
        return self._training() or self.evaluation.is_running()

    def _training(self) -> bool:
        return self.worker is not None and self.worker.is_running()

    def blocker(self) -> str:
        """Why training cannot start now ("" when it can), phrased as what to do."""
        if self.session.project is None:
            return "Open a folder of images first (File ▸ Open images folder, or drop it here)."
        info = self.settings.model_info
        if not info.ok:
            return f"Base model: {info.problem}"
        if self.settings.problems:
            first = self.settings.problems[0]
            return (f"Fix {len(self.settings.problems)} setting(s) marked in red "
                    f"({first.field.replace('_', ' ')}).")
        report = self.session.report
        if report is None:
            return "Checking the dataset…"
        blocking = report.blocking()  # exactly what the worker's dataset.load refuses
        if any(f.code == "no_images" for f in blocking):
            return "No images to train on: add images to the folder or include some."
        if blocking:
            return (f"{len(blocking)} file(s) cannot be read or used ({blocking[0].path.name}): "
                    f"exclude or fix them on the Dataset tab.")
        return ""

    def update_train_button(self) -> None:
        running = self.is_running()
        reason = "" if running else self.blocker()
        self.train_button.setEnabled(not running and not reason and not self.waiting_for_gpu)
        self.stop_button.setEnabled(
            (self._training() and not self.worker.stop_requested)
            or (self.evaluation.is_running() and not self.evaluation.cancelling()))
        self.reason.setText(reason)
        if not running and self.worker is None:  # no run yet in this session
            self.panel.phase.setText("Ready to train." if not reason else "Not ready to train yet")

    def start_training(self, resume: Path | None = None) -> None:
        """A new run, or with `resume` (a run folder) the continuation of a stopped one. The
        worker creates and owns the run folder; the panel learns it from the first status."""
        if self.is_running() or self.blocker() or self.waiting_for_gpu:
            return
        if self.before_start is not None and not self.before_start(
                lambda: self._gpu_freed(resume)):
            self.waiting_for_gpu = True
            self.panel.phase.setText("Stopping the preview to free the GPU…")
            self.update_train_button()
            return
        project = self.session.project
        self.session.save_now()  # the worker reads project.toml
        self.store.data.remember_model(self.session.config.base_model)
        self.store.save()
        self.settings.model.set_recent(self.store.data.recent_models)
        if self.worker is not None:
            self.worker.deleteLater()  # the previous run's, finished
        self.worker = worker = self.worker_factory()
        worker.setParent(self)
        worker.event_received.connect(self._on_event)
        worker.log_received.connect(self.panel.on_log)
        worker.finished.connect(self._on_finished)
        self.panel.begin(resume)
        self.lower.setCurrentIndex(0)
        worker.start_train(project.root, resume=resume)
        self.runs.set_can_resume(False)
        self.running_changed.emit(True)
        self.update_train_button()
        self.status_message.emit(f"Resuming {resume}" if resume else "Training started")

    def _gpu_freed(self, resume: Path | None) -> None:
        self.waiting_for_gpu = False
        self.start_training(resume)
        if not self.is_running():  # not started after all (the project closed meanwhile?)
            self.running_changed.emit(False)
            self.update_train_button()

    def stop_training(self) -> None:
        if self.evaluation.is_running():
            self.evaluation.cancel()
            self.update_train_button()
        elif self.is_running():
            self.worker.stop()
            self.panel.phase.setText("Stopping after this step and saving…")
            self.update_train_button()

    def _on_event(self, event) -> None:
        self.panel.on_event(event)
        if isinstance(event, protocol.LoraSaved):
            self.runs.refresh()

    def _on_finished(self, exit_code: int, crashed: bool) -> None:
        worker = self.worker
        message = self.panel.finish(exit_code, crashed, worker.stderr_text(),
                                    worker.stop_requested)
        self.runs.refresh()
        self.status_message.emit(message)
        self._notify(message)
        run_dir = self.panel.run_dir
        if (exit_code == protocol.EXIT_OK and not crashed and not worker.stop_requested
                and self.panel.adapter is not None and run_dir is not None
                and report_card.evaluate_after(run_dir)):
            # The report card right away (evaluate_after_training): the run counts as running
            # until it is made or cancelled, so the Generate tab's worker waits for the GPU.
            self._after_evaluation = (exit_code, crashed)
            self._evaluate(run_dir, report_card.quick_after(run_dir))
            return
        self.runs.set_can_resume(True)
        self.update_train_button()
        self.running_changed.emit(False)
        self.run_finished.emit(exit_code, crashed)

    # --- the report card ------------------------------------------------------------------
    def show_report(self, run_dir: Path) -> None:
        if not (self.evaluation.is_running() and self.evaluation.run_dir == Path(run_dir)):
            self.report.set_busy(False)
        self.report.set_run(run_dir)
        if self.evaluation.is_running() and self.evaluation.run_dir == Path(run_dir):
            self.report.set_busy(True)
            self.report.on_progress(self.evaluation.done, self.evaluation.total,
                                    self.evaluation.shown_text())
        self.views.setCurrentWidget(self.report)
        # The card's images need the height: the log and runs below keep a few lines.
        sizes = self.right_split.sizes()
        lower = min(sizes[1], 7 * self.fontMetrics().height())
        self.right_split.setSizes([sum(sizes) - lower, lower])

    def start_evaluation(self, run_dir: Path, quick: bool = False) -> None:
        """The artist asked for a run's report card (`quick`: on the training samples, see
        training/evaluate.py): free the GPU (the Generate tab's worker) first, as for
        training."""
        if self.is_running() or self.waiting_for_gpu:
            return
        if self.before_start is not None and not self.before_start(
                lambda: self._gpu_freed_for(run_dir, quick)):
            self.waiting_for_gpu = True
            self.update_train_button()
            return
        self._evaluate(run_dir, quick)

    def _gpu_freed_for(self, run_dir: Path, quick: bool) -> None:
        self.waiting_for_gpu = False
        self._evaluate(run_dir, quick)

    def _evaluate(self, run_dir: Path, quick: bool = False) -> None:
        self.evaluation.start(run_dir, quick)
        self.report.set_run(run_dir)
        self.report.set_busy(True)
        self.runs.set_can_resume(False)
        self.running_changed.emit(True)
        self.update_train_button()

    def _on_evaluation_progress(self, done: int, total: int, text: str) -> None:
        if self.report.run_dir == self.evaluation.run_dir:
            self.report.on_progress(done, total, text)
        share = f" {100 * done // total} %" if total else "…"
        self.views.setTabText(1, f"Report card{share}")

    def _on_evaluation_finished(self, run_dir: Path, ok: bool, message: str) -> None:
        self.views.setTabText(1, "Report card")
        if self.report.run_dir == run_dir:
            self.report.set_busy(False)
            self.report.reload()
            if not ok:
                self.report.show_message(message)
        self.runs.refresh()
        self.runs.set_can_resume(True)
        self.status_message.emit(("Report card: " if ok else "") + message)
        self.update_train_button()
        self.running_changed.emit(False)
        outcome, self._after_evaluation = self._after_evaluation, None
        if outcome is not None:
            self.run_finished.emit(*outcome)

    def _apply_fix(self, fix: dict) -> None:
        """The settings an error event suggests (e.g. a smaller batch after running out of GPU
        memory), applied so the artist only has to press Train again."""
        try:
            cfg = config.from_dict(fix, self.session.config)
        except config.ConfigError as exc:
            self.status_message.emit(f"The suggested settings do not apply: {exc}")
            return
        self.session.set_config(cfg)
        self.status_message.emit("Applied: " + ", ".join(f"{k} = {v}" for k, v in fix.items()))

    def _notify(self, message: str) -> None:
        """Flash the taskbar and, where there is a system tray, show a desktop notification."""
        window = self.window()
        QApplication.alert(window)
        if not window.isActiveWindow() and QSystemTrayIcon.isSystemTrayAvailable():
            tray = QSystemTrayIcon(window.windowIcon(), self)
            tray.show()
            tray.showMessage("LoRA Studio", message)

    def _show_result(self) -> None:
        target = self.panel.adapter or self.panel.run_dir
        if target is not None:
            outputs.open_folder(target)
