"""The main window: welcome screen or the Dataset / Train / Generate tabs, menus, drag and drop,
and a graceful shutdown of a running worker."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QMainWindow, QMessageBox, QStackedWidget,
                               QTabWidget)

from studio import settings
from studio.runs import demo
from studio.runs import workspace
from studio.config import ConfigError
from studio.runs.project import Project
from ui.app_settings import SettingsStore
from ui.dataset_tab import DatasetTab
from ui.generate_tab import GenerateTab
from ui.session import ProjectSession
from ui.train_tab import TrainTab, WorkerFactory
from ui.welcome import Welcome
from ui.worker import WorkerProcess

STATUS_MS = 8000


class MainWindow(QMainWindow):
    def __init__(self, store: SettingsStore, worker_factory: WorkerFactory = WorkerProcess):
        super().__init__()
        self.store = store
        self.session = ProjectSession(self)
        self.session.error.connect(self.show_error)
        self._closing = False
        self.setWindowTitle("LoRA Studio")
        self.setAcceptDrops(True)
        self.resize(1280, 800)
        self.setMinimumSize(960, 640)

        self.welcome = Welcome()
        self.welcome.choose_folder.connect(self.choose_folder)
        self.welcome.open_demo.connect(self.open_demo)
        self.welcome.open_recent.connect(self.open_path)
        self.dataset_tab = DatasetTab(self.session)
        self.train_tab = TrainTab(self.session, store, worker_factory)
        # Its own worker (the generation server), paused while training: one GPU worker.
        self.generate_tab = GenerateTab(self.session, worker_factory)
        self.train_tab.before_start = self.generate_tab.free_gpu
        self.train_tab.open_in_generate.connect(self.open_in_generate)
        self.train_tab.run_finished.connect(lambda *_: self.generate_tab.refresh_loras())
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.dataset_tab, "1  Dataset")
        self.tabs.addTab(self.train_tab, "2  Train")
        self.tabs.addTab(self.generate_tab, "3  Generate")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.tabs)
        self.setCentralWidget(self.stack)
        for tab in (self.dataset_tab, self.train_tab, self.generate_tab):
            tab.status_message.connect(self.status)
        self.train_tab.running_changed.connect(self._on_running)
        self._build_menus()
        self._refresh_recent()
        if store.data.window_geometry:
            self.restoreGeometry(QByteArray.fromHex(store.data.window_geometry.encode()))
        for warning in store.data.warnings:
            self.status(warning)

    def _build_menus(self) -> None:
        file = self.menuBar().addMenu("&File")
        self._action(file, "&Open images folder…", self.choose_folder,
                     QKeySequence.StandardKey.Open, "Start a project from a folder of images (or reopen its project).")
        self._action(file, "Open &project folder…", self.choose_project, None,
                     "Open a LoRA Studio project folder (it contains project.toml).")
        self.recent_menu = file.addMenu("&Recent projects")
        self._action(file, "Open the &demo project", self.open_demo, None,
                     "The bundled demo style set and pocket model.")
        file.addSeparator()
        self._action(file, "&Close project", self.close_project, QKeySequence.StandardKey.Close)
        self._action(file, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        edit = self.menuBar().addMenu("&Edit")
        undo = self.session.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.session.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        edit.addActions([undo, redo])
        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "&About LoRA Studio", self._about)

    def _action(self, menu, text, slot, shortcut=None, tip="") -> QAction:
        action = menu.addAction(text)
        action.triggered.connect(slot)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.setStatusTip(tip)
        return action

    # --- opening --------------------------------------------------------------------------
    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the folder with your images")
        if path:
            self.open_path(Path(path))

    def choose_project(self) -> None:
        start = str(workspace.projects_dir()) if workspace.projects_dir().is_dir() else ""
        path = QFileDialog.getExistingDirectory(self, "Choose a LoRA Studio project folder", start)
        if path:
            self.open_path(Path(path))

    def open_path(self, path: Path) -> bool:
        """A dropped/chosen folder: a project, or images to make (or reopen) a project for."""
        base = self.store.data.recent_models[0] if self.store.data.recent_models else ""
        try:
            project = workspace.open_folder(Path(path), base_model=base)
        except (workspace.WorkspaceError, OSError, ConfigError) as exc:
            self.show_error(str(exc), getattr(exc, "hint", ""))
            return False
        return self.open_project(project)

    def open_project(self, project: Project) -> bool:
        if self.train_tab.is_running():
            self.show_error("A training run is in progress.", "Stop it before opening another "
                                                              "project.")
            return False
        try:
            self.session.open(project)
        except ConfigError as exc:
            self.show_error(f"The settings of {project.root.name} could not be read:\n{exc}",
                            f"Fix or delete {project.config_file} and open the project again.")
            return False
        self.store.data.remember_project(project.root)
        self.store.save()
        self._refresh_recent()
        self.setWindowTitle(f"{project.root.name} — LoRA Studio")
        self.stack.setCurrentWidget(self.tabs)
        self.status(f"Opened {project.root}")
        return True

    def open_demo(self) -> None:
        if not demo.assets_present():
            self.show_error("The demo assets are not installed in this copy of LoRA Studio.",
                            "Run `python3 scripts/bootstrap.py demo` once, or drop a folder of "
                            "your own images on this window.")
            return
        try:
            # Beside the artist's other projects (LORA_STUDIO_HOME-aware, unlike its default).
            self.open_project(demo.create_demo_project(settings.data_dir() / "demo-project"))
        except (OSError, FileNotFoundError, ConfigError) as exc:
            self.show_error(f"Could not create the demo project: {exc}",
                            "Check that the LoRA Studio data folder is writable.")

    def close_project(self) -> None:
        if self.train_tab.is_running():
            self.show_error("A training run is in progress.", "Stop it first.")
            return
        self.dataset_tab.captions.save()
        self.session.close()
        self.setWindowTitle("LoRA Studio")
        self.welcome.update_demo_state()
        self.stack.setCurrentWidget(self.welcome)

    def _refresh_recent(self) -> None:
        recent = [p for p in self.store.data.recent_projects if Path(p).is_dir()]
        self.welcome.set_recent(recent)
        self.recent_menu.clear()
        for path in recent:
            self.recent_menu.addAction(path).triggered.connect(
                lambda _=False, p=path: self.open_path(Path(p)))
        self.recent_menu.setEnabled(bool(recent))

    # --- drag and drop --------------------------------------------------------------------
    @staticmethod
    def _dropped_folder(event) -> Path | None:
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if not urls:
            return None
        path = Path(urls[0].toLocalFile())
        return path if path.is_dir() else path.parent  # dropped images: use their folder

    def dragEnterEvent(self, event) -> None:
        if self._dropped_folder(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        folder = self._dropped_folder(event)
        if folder is not None:
            event.acceptProposedAction()
            self.open_path(folder)

    # --- messages -------------------------------------------------------------------------
    def status(self, message: str) -> None:
        self.statusBar().showMessage(message, STATUS_MS)

    def show_error(self, message: str, hint: str = "") -> None:
        self.status(message.splitlines()[0])
        box = QMessageBox(QMessageBox.Icon.Warning, "LoRA Studio", message, parent=self)
        if hint:
            box.setInformativeText(hint)
        box.open()  # not exec(): never block the event loop (a run may be reporting)

    def _about(self) -> None:
        QMessageBox.about(self, "About LoRA Studio", "<b>LoRA Studio</b><p>Train Stable Diffusion "
                          "style LoRAs from a folder of your images, on your own machine.</p>")

    def open_in_generate(self, adapter) -> None:
        """The Train tab's "Open in Generate": that LoRA, ready to try."""
        self.tabs.setCurrentWidget(self.generate_tab)
        self.generate_tab.open_lora(Path(adapter))

    def _on_running(self, running: bool) -> None:
        self.generate_tab.set_training(running)
        self.tabs.setTabText(1, "2  Train (running…)" if running else "2  Train")
        self.tabs.setTabText(2, "3  Generate (paused)" if running else "3  Generate")
        if not running and self._closing:
            QTimer.singleShot(0, self.close)

    # --- shutdown -------------------------------------------------------------------------
    def confirm_stop(self) -> bool:
        """Asked when closing during a run (tests replace this)."""
        answer = QMessageBox.question(
            self, "Training is running", "Stop training and close? The LoRA trained so far is "
            "saved first (this can take a few seconds).")
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event) -> None:
        if self.train_tab.is_running():
            if not self._closing and not self.confirm_stop():
                event.ignore()
                return
            self._closing = True
        # The question above runs its own event loop: the run may have finished (and reported
        # it, while _closing was still False) before the answer came, so ask again here.
        if self.train_tab.is_running():
            # Stop gracefully and close once the worker has saved and exited (or was killed
            # after its grace period); the window stays until then, showing the progress.
            self.train_tab.stop_training()
            self.status("Stopping training and saving the LoRA before closing…")
            event.ignore()
            return
        self.dataset_tab.captions.save()
        self.session.save_now()
        self.generate_tab.shutdown()
        self.train_tab.settings.memory.planner.cancel()  # a plan in progress saves nothing
        self.store.data.window_geometry = bytes(self.saveGeometry().toHex()).decode()
        self.store.save()
        event.accept()
