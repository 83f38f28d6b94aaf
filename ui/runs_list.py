"""The project's past runs (newest first) with their outcome, the epoch their report card recommends, and the LoRA's actions."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QPushButton, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from studio.runs import history as run_history
from studio.runs.project import Project
from ui import outputs

COLUMNS = ["Run", "Result", "Steps", "LoRA", "Best epoch"]
STATUS_TEXT = {"finished": "✓ Finished", "stopped": "■ Stopped early", "failed": "✗ Failed",
               "incomplete": "… Incomplete"}


class RunsList(QWidget):
    status_message = Signal(str)
    resume_requested = Signal(object)  # the run folder to continue
    report_requested = Signal(object)  # the run folder whose report card to show

    def __init__(self, store, parent=None):
        super().__init__(parent)
        self.project: Project | None = None
        self.can_resume = True  # False while a run is in progress
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setToolTip("Every training run of this project. Double-click to open its "
                             "folder.")
        self.tree.itemDoubleClicked.connect(lambda *_: self._show())
        self.tree.currentItemChanged.connect(lambda *_: self._update_buttons())
        self.show_button = QPushButton("Show in folder")
        self.show_button.setToolTip("Open the selected run's folder (LoRA, log, settings used).")
        self.show_button.clicked.connect(self._show)
        self.copy_button = QPushButton("Copy to…")
        self.copy_button.setToolTip("Copy the selected run's LoRA into another app's LoRA folder.")
        self.copy_button.setMenu(outputs.copy_menu(self, self.selected_adapter, store,
                                                   self.status_message.emit))
        self.report_button = QPushButton("Report card")
        self.report_button.setToolTip("Which LoRA file of the selected run learned the style "
                                      "without breaking the model: its report card.")
        self.report_button.clicked.connect(
            lambda: self.selected() and self.report_requested.emit(self.selected().run.path))
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the selected stopped run from its last resume "
                                      "point, exactly where it left off (same settings needed).")
        self.resume_button.clicked.connect(
            lambda: self.selected() and self.resume_requested.emit(self.selected().run.path))
        buttons = QHBoxLayout()
        buttons.addWidget(self.show_button)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.report_button)
        buttons.addWidget(self.resume_button)
        buttons.addStretch()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree)
        layout.addLayout(buttons)
        self._update_buttons()

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        self.tree.clear()
        if self.project is None:
            return
        for summary in run_history.history(self.project):
            steps = f"{summary.step:,}" + (f" / {summary.total:,}" if summary.total else "")
            best = "–" if summary.recommended_epoch is None else str(summary.recommended_epoch)
            item = QTreeWidgetItem([summary.name, STATUS_TEXT[summary.status], steps,
                                    summary.adapter.name if summary.adapter else "–", best])
            item.setData(0, Qt.ItemDataRole.UserRole, summary)
            if summary.message:
                item.setToolTip(1, summary.message)
            item.setToolTip(4, summary.recommendation or "No report card yet: select the run "
                                                         "and press Report card.")
            self.tree.addTopLevelItem(item)
        for column in range(len(COLUMNS)):
            self.tree.resizeColumnToContents(column)
        if self.tree.topLevelItemCount():
            self.tree.setCurrentItem(self.tree.topLevelItem(0))  # the newest run
        self._update_buttons()

    def set_can_resume(self, on: bool) -> None:
        self.can_resume = on
        self._update_buttons()

    def selected(self):
        item = self.tree.currentItem()
        return item.data(0, Qt.ItemDataRole.UserRole) if item else None

    def selected_adapter(self) -> Path | None:
        summary = self.selected()
        return summary.adapter if summary else None

    def _show(self) -> None:
        summary = self.selected()
        if summary is not None:
            outputs.open_folder(summary.adapter or summary.run.path)

    def _update_buttons(self) -> None:
        summary = self.selected()
        self.show_button.setEnabled(summary is not None)
        self.copy_button.setEnabled(summary is not None and summary.adapter is not None)
        self.report_button.setEnabled(summary is not None)
        self.resume_button.setEnabled(summary is not None and summary.resumable
                                      and self.can_resume)
