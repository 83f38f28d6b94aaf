"""The Dataset tab: thumbnail grid with issue badges (kohya subfolder images labelled with their
folder and repeats), preview + caption editor, bulk actions, summary and findings. Exclusions go to
the project's `exclude_images`; no image is ever written."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QUndoCommand
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QInputDialog, QLabel,
                               QListView, QPushButton, QSplitter, QVBoxLayout, QWidget)

from studio.dataset import captions, plan, summary
from studio.config import TrainConfig
from ui import theme
from ui.bulk_dialogs import FindReplaceDialog
from ui.caption_editor import CaptionEdit, CaptionPanel
from ui.dataset_model import FILTERS, DatasetFilter, DatasetModel, PathRole
from ui.dataset_summary import DatasetSummary
from ui.session import ProjectSession
from ui.thumbnails import ThumbnailLoader
from ui.widgets.thumb_delegate import CELL, ThumbDelegate


class ThumbGrid(QListView):
    """Icon grid whose cells widen to share out the row's spare width (no ragged gap on the
    right at any window size)."""

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        width = self.viewport().width() - 2
        columns = max(1, width // (CELL.width() + 4))
        self.setGridSize(QSize(width // columns, CELL.height() + 4))


class ExcludeCommand(QUndoCommand):
    def __init__(self, session: ProjectSession, before: tuple[str, ...], after: tuple[str, ...],
                 text: str):
        super().__init__(text)
        self.session, self.before, self.after = session, before, after

    def redo(self) -> None:
        self.session.update(exclude_images=self.after)

    def undo(self) -> None:
        self.session.update(exclude_images=self.before)


class DatasetTab(QWidget):
    status_message = Signal(str)

    def __init__(self, session: ProjectSession, parent=None):
        super().__init__(parent)
        self.session = session
        self.loader = ThumbnailLoader(parent=self)
        self.model = DatasetModel(self.loader, self)
        self.proxy = DatasetFilter(self)
        self.proxy.setSourceModel(self.model)

        self.grid = ThumbGrid()
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setUniformItemSizes(True)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.grid.setItemDelegate(ThumbDelegate(self.grid))
        self.grid.setModel(self.proxy)
        self.grid.setMouseTracking(True)
        self.grid.selectionModel().selectionChanged.connect(self._on_selection)

        self.folder_label = QLabel()
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        open_folder = QPushButton("Show folder")
        open_folder.setToolTip("Open the dataset folder in your file manager.")
        open_folder.clicked.connect(self._show_folder)
        rescan = QPushButton("Check again")
        rescan.setToolTip("Re-read the folder, e.g. after adding or editing images elsewhere.")
        rescan.clicked.connect(session.rescan)
        self.filter = QComboBox()
        for key, label in FILTERS.items():
            self.filter.addItem(label, key)
        self.filter.setToolTip("Show only some images (here and in the findings list).")
        self.filter.currentIndexChanged.connect(self._on_filter)
        self.trigger_button = QPushButton("Add trigger word")
        self.trigger_button.setToolTip("Write the trigger word at the start of each caption file "
                                       "(selected images, or all when one or none is selected). "
                                       "Training adds it anyway; this helps other tools.")
        self.trigger_button.clicked.connect(self.add_trigger_word)
        self.replace_button = QPushButton("Find && replace…")
        self.replace_button.setToolTip("Replace or remove text in captions (selected images, or "
                                       "all when one or none is selected).")
        self.replace_button.clicked.connect(self.find_replace)
        self.exclude_button = QPushButton("Exclude")
        self.exclude_button.setToolTip("Leave the selected images out of training. The files "
                                       "stay where they are, untouched.")
        self.exclude_button.clicked.connect(lambda: self.set_excluded(self.selected(), True))
        self.include_button = QPushButton("Include")
        self.include_button.setToolTip("Train with the selected images again.")
        self.include_button.clicked.connect(lambda: self.set_excluded(self.selected(), False))

        self.captions = CaptionPanel(self.loader, session.undo_stack)
        self.captions.saved.connect(self._captions_changed)
        self.summary = DatasetSummary()
        self.summary.setMinimumHeight(200)  # room for the summary without scrolling at 800 px
        self.summary.image_clicked.connect(self.select_image)

        top = QHBoxLayout()
        top.addWidget(QLabel("<b>Images:</b>"))
        top.addWidget(self.folder_label, 1)
        top.addWidget(open_folder)
        top.addWidget(rescan)
        tools = QHBoxLayout()
        tools.addWidget(self.filter)
        tools.addStretch()
        for button in (self.trigger_button, self.replace_button, self.exclude_button,
                       self.include_button):
            tools.addWidget(button)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.grid)
        left.addWidget(self.summary)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 1)
        left.setChildrenCollapsible(False)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.captions)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(tools)
        layout.addWidget(split, 1)

        session.project_changed.connect(self._on_project)
        session.report_changed.connect(self._on_report)
        session.config_changed.connect(self._on_config)
        self._update_buttons()

    # --- session -> view ------------------------------------------------------------------
    def _on_project(self, project) -> None:
        self.captions.show_image(None, 0)
        folder = self.session.dataset_dir
        self.folder_label.setText(str(folder) if folder else "")
        self.model.set_images(summary.list_images(folder, self.session.config.repeats)
                              if folder else [])
        self.model.set_excluded(frozenset(self.session.config.exclude_images))

    def _on_report(self, report) -> None:
        if report is None:
            self.summary.show_report(None, self.session.config)
            return
        self.model.set_report(report)
        # Every caption starts with the same made-up word (the demo's "zxqstyle"): that is the
        # trigger word, when the project has none yet (issue 14).
        word = summary.shared_trigger([report.captions.get(p, "") for p in report.used()])
        if word and not self.session.config.trigger_word:
            self.session.update(trigger_word=word)
            self.status_message.emit(f"Every caption starts with “{word}”: it is now the "
                                     f"trigger word (Train tab).")
        self._refresh_summary()

    def _on_config(self, cfg: TrainConfig) -> None:
        folder = self.session.dataset_dir
        self.folder_label.setText(str(folder) if folder else "")
        self.model.set_excluded(frozenset(cfg.exclude_images))
        self._refresh_summary()
        self._update_buttons()

    def _refresh_summary(self) -> None:
        folder = self.session.dataset_dir
        if folder is not None and not folder.is_dir():
            self.summary.set_text(
                f"<span style='color:{theme.ERROR}'><b>The dataset folder is missing:</b> "
                f"{folder}</span><br>Was it moved or renamed? Drop the folder on this window "
                f"(or use File ▸ Open images folder) to open it again.")
            return
        self.summary.show_report(self.session.report, self.session.config,
                                 self.filter.currentData())

    # --- selection ------------------------------------------------------------------------
    def selected(self) -> list[Path]:
        rows = self.grid.selectionModel().selectedIndexes()
        return [index.data(PathRole) for index in sorted(rows, key=lambda i: i.row())]

    def select_image(self, image: Path) -> None:
        row = self.model.row_of(image)
        if row < 0:
            return
        index = self.proxy.mapFromSource(self.model.index(row))
        if not index.isValid():  # hidden by the filter: show everything
            self.filter.setCurrentIndex(0)
            index = self.proxy.mapFromSource(self.model.index(row))
        self.grid.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        self.grid.setCurrentIndex(index)
        self.grid.scrollTo(index)

    def _on_selection(self, *_) -> None:
        images = self.selected()
        if len(images) == 1:
            self.captions.show_image(images[0], details=self._details(images[0]))
        else:
            self.captions.show_image(None, len(images))
        self._update_buttons()

    def _details(self, image: Path) -> str:
        report = self.session.report
        parts = []
        if report and image in report.sizes:
            w, h = report.sizes[image]
            bucket = plan.bucket_sizes([(w, h)], self.session.config)[0]
            parts.append(f"{w}×{h} px · trains at {bucket[0]}×{bucket[1]}")
        if self.model.group_label(image):
            group, times = self.model.groups[image]
            parts.append(f"in {group}/, trained {times}× per epoch")
        if self.model.name_of(image) in self.session.config.exclude_images:
            parts.append("excluded from training")
        lines = [" · ".join(parts)] if parts else []
        lines += [theme.SEVERITY_ICONS.get(f.severity, "") + f.message
                  for f in (report.for_path(image) if report else [])]
        return "\n".join(lines)

    def _update_buttons(self) -> None:
        images = self.selected()
        excluded = set(self.session.config.exclude_images)
        self.exclude_button.setEnabled(any(self.model.name_of(p) not in excluded for p in images))
        self.include_button.setEnabled(any(self.model.name_of(p) in excluded for p in images))
        has_images = bool(self.model.images)
        self.trigger_button.setEnabled(has_images)
        self.replace_button.setEnabled(has_images)

    def _on_filter(self) -> None:
        self.proxy.set_mode(self.filter.currentData())
        self._refresh_summary()
        if self.filter.currentData() not in ("all", "included", "excluded"):
            self.summary.setCurrentIndex(1)  # a problem filter: show the matching findings

    # --- actions --------------------------------------------------------------------------
    def scope(self) -> tuple[list[Path], str]:
        """Bulk edits apply to a multi-selection, else to every included image."""
        chosen = self.selected()
        if len(chosen) > 1:
            return chosen, f"the {len(chosen)} selected images"
        excluded = set(self.session.config.exclude_images)
        images = [p for p in self.model.images if self.model.name_of(p) not in excluded]
        return images, f"all {len(images)} included images"

    def set_excluded(self, images: list[Path], exclude: bool) -> None:
        before = tuple(self.session.config.exclude_images)
        names = set(before)
        chosen = {self.model.name_of(p) for p in images}  # "10_style/a.png", as the worker
        names = names | chosen if exclude else names - chosen
        after = tuple(sorted(names))
        if after != before:
            verb = "Exclude" if exclude else "Include"
            self.session.undo_stack.push(ExcludeCommand(self.session, before, after,
                                                        f"{verb} {len(images)} image(s)"))
            self.status_message.emit(f"{verb}d {len(images)} image(s); the files are untouched.")
        self._on_selection()

    def apply_bulk(self, images: list[Path], edit, label: str) -> int:
        self.captions.save()
        try:
            changes = captions.bulk(images, edit)
        except OSError as exc:
            self.status_message.emit(f"Could not write a caption file: {exc}")
            return 0
        if changes:
            self.session.undo_stack.push(CaptionEdit(changes, label,
                                                     self.captions.files_changed))
            self.captions.files_changed([c.image for c in changes])
        self.status_message.emit(f"{label}: {len(changes)} caption(s) changed "
                                 f"(Edit ▸ Undo reverts it).")
        return len(changes)

    def add_trigger_word(self) -> None:
        word = self.session.config.trigger_word
        if not word:
            word, ok = QInputDialog.getText(
                self, "Trigger word", "A rare word that will call your style in prompts "
                "(e.g. 'zxqstyle'):")
            word = word.strip().replace(",", "")
            if not ok or not word:
                return
            self.session.update(trigger_word=word)
        images, _ = self.scope()
        self.apply_bulk(images, lambda c: captions.add_trigger(c, word),
                        f"Add trigger word '{word}'")

    def find_replace(self) -> None:
        images, scope = self.scope()
        dialog = FindReplaceDialog(images, scope, self)
        if dialog.exec():
            self.apply_bulk(images, dialog.edit(), f"Replace '{dialog.find.text()}'")

    def _captions_changed(self, images: list[Path]) -> None:
        report = self.session.report
        for image in images:
            if report is not None:
                summary.update_caption(report, image, captions.read(image))
            self.model.refresh(image)
        if report is not None:
            self._refresh_summary()

    def _show_folder(self) -> None:
        if self.session.dataset_dir:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.session.dataset_dir)))
