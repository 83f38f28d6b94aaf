"""DatasetModel: every image of the dataset (its folder and kohya `N_name` subfolders, in training
order, so each subfolder's images sit together) as a list row (thumbnail, caption, findings, folder
and repeats), and the filter proxy behind "only problems / only duplicates / …"."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import (QAbstractListModel, QModelIndex, QPersistentModelIndex,
                            QSortFilterProxyModel, Qt)

from studio.dataset.report import Report
from studio.dataset.summary import shows
from ui import theme
from ui.thumbnails import ThumbnailLoader

THUMB_PX = 200  # decoded size; the grid paints them at up to 150 px, sharp on 1.25x displays

PathRole = Qt.ItemDataRole.UserRole + 1
IssuesRole = Qt.ItemDataRole.UserRole + 2
ExcludedRole = Qt.ItemDataRole.UserRole + 3
CaptionRole = Qt.ItemDataRole.UserRole + 4
SizeRole = Qt.ItemDataRole.UserRole + 5
BrokenRole = Qt.ItemDataRole.UserRole + 6
GroupRole = Qt.ItemDataRole.UserRole + 7  # "10_style · ×10" for a kohya subfolder's images

# Filter choices (keys: studio.dataset.summary.shows).
FILTERS = {"all": "All images", "problems": "Only problems", "errors": "Only errors (can't train)",
           "duplicates": "Only duplicates", "captions": "Only caption problems",
           "too_small": "Only too small", "excluded": "Only excluded", "included": "Only included"}


class DatasetModel(QAbstractListModel):
    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.images: list[Path] = []
        self.names: dict[Path, str] = {}  # "10_style/a.png": the name exclude_images uses
        self.groups: dict[Path, tuple[str, int]] = {}  # kohya subfolder and its repeats
        self.report: Report | None = None
        self.excluded: frozenset[str] = frozenset()
        self._row: dict[str, int] = {}
        loader.ready.connect(self._on_thumbnail)

    def set_images(self, entries: list[tuple[Path, str, int]]) -> None:
        """(image, name, repeats) in training order (scanner.image_files), before the scan."""
        self.beginResetModel()
        self.images = [path for path, _, _ in entries]
        self.names = {path: name for path, name, _ in entries}
        self.groups = {path: (name.split("/", 1)[0], times) for path, name, times in entries
                       if "/" in name}
        self._row = {str(p): i for i, p in enumerate(self.images)}
        self.report = None
        self.endResetModel()

    def set_report(self, report: Report | None) -> None:
        """New findings/captions/exclusions; rows change only if the folder's files changed."""
        if report is not None and report.images != self.images:
            self.set_images([(p, report.name(p), report.repeats_of(p)) for p in report.images])
        self.report = report
        if report is not None:
            self.excluded = report.excluded
            self.groups = {p: (report.group(p), report.repeats_of(p)) for p in report.images
                           if report.group(p)}
        self._all_changed()

    def name_of(self, path: Path) -> str:
        return self.names.get(path, path.name)

    def group_label(self, path: Path) -> str:
        group = self.groups.get(path)
        return f"{group[0]} · ×{group[1]}" if group else ""

    def set_excluded(self, names: frozenset[str]) -> None:
        self.excluded = frozenset(names)
        self._all_changed()

    def refresh(self, path: Path) -> None:
        row = self._row.get(str(path))
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index)

    def _all_changed(self) -> None:
        if self.images:
            self.dataChanged.emit(self.index(0), self.index(len(self.images) - 1))

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.images)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.images):
            return None
        path = self.images[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return path.name
        if role == Qt.ItemDataRole.DecorationRole:
            return self.loader.get(path, THUMB_PX)
        if role == PathRole:
            return path
        if role == IssuesRole:
            return self.report.for_path(path) if self.report else []
        if role == ExcludedRole:
            return self.name_of(path) in self.excluded
        if role == GroupRole:
            return self.group_label(path)
        if role == CaptionRole:
            return self.report.captions.get(path, "") if self.report else ""
        if role == SizeRole:
            return self.report.sizes.get(path) if self.report else None
        if role == BrokenRole:
            return self.loader.is_broken(path, THUMB_PX)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(path, index)
        return None

    def _tooltip(self, path: Path, index) -> str:
        lines = [f"<b>{self.name_of(path)}</b>"]
        if path in self.groups:
            group, times = self.groups[path]
            lines.append(f"In {group}/: trained {times}× per epoch (kohya repeats)")
        size = self.data(index, SizeRole)
        if size:
            lines.append(f"{size[0]}×{size[1]} px")
        if self.name_of(path) in self.excluded:
            lines.append("<i>Excluded from training (the file is untouched)</i>")
        caption = self.data(index, CaptionRole)
        if caption:
            lines.append(caption if len(caption) < 300 else caption[:300] + "…")
        lines += [theme.SEVERITY_ICONS.get(i.severity, "") + i.message
                  for i in self.data(index, IssuesRole)]
        return "<br>".join(lines)

    def _on_thumbnail(self, path: str, size: int) -> None:
        row = self._row.get(path)
        if row is not None and size == THUMB_PX:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    def row_of(self, path: Path) -> int:
        return self._row.get(str(path), -1)


class DatasetFilter(QSortFilterProxyModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.mode = "all"

    def set_mode(self, mode: str) -> None:
        self.beginFilterChange()
        self.mode = mode
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, row: int, parent) -> bool:
        index = self.sourceModel().index(row, 0, parent)
        return shows(self.mode, index.data(IssuesRole) or [], bool(index.data(ExcludedRole)))
