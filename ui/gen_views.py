"""The two ways the Generate tab helps choose: "with / without" (one seed, the LoRA on and off,
side by side or overlaid) and the epoch × strength grid (rows: a run's LoRA files, columns:
strengths)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QGridLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QStackedWidget, QVBoxLayout, QWidget)

from studio import grid
from studio.runs import loras as lora_catalog
from studio.runs.loras import RunLoras
from ui import outputs, theme
from ui.gen_results import save_copy
from ui.widgets.compare_overlay import CompareOverlay
from ui.widgets.grid_preview import GridPreview
from ui.widgets.image_preview import ImagePreview
from ui.widgets.image_viewer import ImageViewer


class CompareView(QWidget):
    """Two images of the same seed: with the chosen LoRA(s), and with none. Side by side at one
    scale, or on top of each other (a split line to drag, or blinking), where small differences
    of texture show best."""

    compare_requested = Signal()
    MODES = (("side", "Side by side"), ("split", "Overlay: split"), ("blink", "Overlay: blink"))

    def __init__(self, parent=None):
        super().__init__(parent)
        self.paths: dict[str, Path] = {}
        self.button = QPushButton("Compare with / without")
        theme.set_role(self.button, "primary")
        self.button.setToolTip("Render the same seed twice, with the enabled LoRAs and with "
                               "none, and show them side by side.")
        self.button.clicked.connect(self.compare_requested)
        self.caption = QLabel("The same seed and prompt, with and without your LoRA: the honest "
                              "way to see what it does.")
        self.caption.setWordWrap(True)
        theme.set_role(self.caption, "muted")
        self.labels: dict[str, QLabel] = {}
        self.previews: dict[str, ImagePreview] = {}
        # One grid row for the titles and one for the images, in equal columns: both images get
        # the same pane, so the same scale, however the titles wrap.
        pair = QGridLayout()
        for column, (side, title) in enumerate((("with", "With LoRA"),
                                                ("without", "Without LoRA (base model)"))):
            label = QLabel(f"<b>{title}</b>")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setWordWrap(True)
            preview = ImagePreview()
            preview.setMinimumSize(120, 120)
            preview.set_pixmap(None, "")
            pair.addWidget(label, 0, column)
            pair.addWidget(preview, 1, column)
            pair.setColumnStretch(column, 1)
            self.labels[side], self.previews[side] = label, preview
        pair.setRowStretch(1, 1)
        side_by_side = QWidget()
        side_by_side.setLayout(pair)
        pair.setContentsMargins(0, 0, 0, 0)
        self.overlay = CompareOverlay()
        self.stack = QStackedWidget()
        self.stack.addWidget(side_by_side)
        self.stack.addWidget(self.overlay)
        self.mode_buttons = QButtonGroup(self)
        modes = QHBoxLayout()
        modes.addWidget(QLabel("Show:"))
        for key, text in self.MODES:
            mode = QPushButton(text)
            mode.setCheckable(True)
            mode.setChecked(key == "side")
            mode.setProperty("mode", key)
            mode.clicked.connect(lambda _=False, k=key: self.set_mode(k))
            self.mode_buttons.addButton(mode)
            modes.addWidget(mode)
        self.mode_buttons.buttons()[1].setToolTip(
            "Both images on top of each other: drag the line (left: without, right: with).")
        self.mode_buttons.buttons()[2].setToolTip(
            "Both images in one place, switching every 0.6 s: changes of texture stand out.")
        modes.addStretch()
        self.open_button = QPushButton("Open full size")
        self.open_button.setToolTip("Open the image with the LoRA in a window of its own, to "
                                    "zoom in (double-click an image for either one).")
        self.open_button.clicked.connect(
            lambda: "with" in self.paths and ImageViewer.show_file(self.paths["with"], self))
        modes.addWidget(self.open_button)
        head = QHBoxLayout()
        head.addWidget(self.button)
        head.addWidget(self.caption, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(head)
        layout.addLayout(modes)
        layout.addWidget(self.stack, 1)
        self.mode = "side"
        self._update_overlay()

    def set_mode(self, mode: str) -> None:
        """"side", "split" or "blink"."""
        self.mode = mode
        for button in self.mode_buttons.buttons():
            button.setChecked(button.property("mode") == mode)
        self.stack.setCurrentIndex(0 if mode == "side" else 1)
        self.overlay.set_blinking(mode == "blink")
        self._update_overlay()

    def begin(self, with_label: str, seed: int) -> None:
        self.paths.clear()
        self.caption.setText(f"Seed {seed}: rendering with, then without…")
        self.labels["with"].setText(f"<b>With</b> {with_label}")
        self.labels["without"].setText("<b>Without LoRA</b> (base model)")
        for preview in self.previews.values():
            preview.set_pixmap(None, "Waiting…")
        self._update_overlay()

    def show_side(self, side: str, path: Path, seed: int) -> None:
        self.paths[side] = Path(path)
        self.previews[side].set_pixmap(QPixmap(str(path)), "The image could not be read.")
        self.previews[side].title = f"{side} LoRA · {Path(path).name}"
        if len(self.paths) == 2:
            self.caption.setText(f"Same seed ({seed}), prompt and settings; only the LoRA "
                                 f"differs.")
        self._update_overlay()

    def _update_overlay(self) -> None:
        both = len(self.paths) == 2
        if both:
            self.overlay.set_images(self.previews["without"].pixmap(),
                                    self.previews["with"].pixmap(), ("without", "with"))
        else:
            self.overlay.before = self.overlay.after = None
            self.overlay.update()
        self.open_button.setEnabled("with" in self.paths)


class GridView(QWidget):
    """Choose a run and the strengths; shows the labelled grid the worker made."""

    grid_requested = Signal(object, list)  # RunLoras, strengths
    status_message = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.path: Path | None = None
        self.run = QComboBox()
        self.run.setToolTip("The training run whose LoRA files (one per epoch) make the rows.")
        self.run.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run.setMinimumContentsLength(18)
        self.run.currentIndexChanged.connect(self._update)
        self.strengths = QLineEdit(lora_catalog.format_strengths(grid.DEFAULT_STRENGTHS))
        self.strengths.setToolTip("The columns: LoRA strengths separated by commas (−1 … 2).")
        self.strengths.textChanged.connect(self._update)
        self.button = QPushButton("Make grid")
        theme.set_role(self.button, "primary")
        self.button.setToolTip("Render the prompt once per LoRA file and strength with the "
                               "same seed; the standard way to pick the best epoch.")
        self.button.clicked.connect(self._request)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        theme.set_role(self.summary, "muted")
        self.preview = GridPreview()
        self.preview.set_message("Rows: the LoRA files of a run (earliest at the top). "
                                 "Columns: strengths.\nThe prompt, seed and settings on the "
                                 "left are used for every cell.")
        self.open_button = QPushButton("Open full size")
        self.open_button.setToolTip("Open the grid image in a window of its own, to zoom in.")
        self.open_button.clicked.connect(
            lambda: self.path and ImageViewer.show_file(self.path, self))
        self.save = QPushButton("Save grid as…")
        self.save.setToolTip("Save the grid as one PNG (with the prompt inside).")
        self.save.clicked.connect(self._save)
        self.show_button = QPushButton("Show in folder")
        self.show_button.clicked.connect(lambda: self.path and outputs.open_folder(self.path))
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Run:"))
        controls.addWidget(self.run, 2)
        controls.addWidget(QLabel("Strengths:"))
        controls.addWidget(self.strengths, 2)
        controls.addWidget(self.button)
        actions = QHBoxLayout()
        actions.addWidget(self.summary, 1)
        actions.addWidget(self.open_button)
        actions.addWidget(self.save)
        actions.addWidget(self.show_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(controls)
        layout.addWidget(self.preview, 1)
        layout.addLayout(actions)
        self.busy = False
        self._update()

    def set_runs(self, runs: list[RunLoras]) -> None:
        current = self.run.currentData()
        self.run.blockSignals(True)
        self.run.clear()
        for run in runs:
            n = len(run.files)
            mark = "" if run.finished or not run.outcome else f" · {run.outcome}"
            self.run.addItem(f"{run.title}{mark}  ({n} file{'s' if n != 1 else ''})", run)
        keep = current.run if current is not None else None
        first = lora_catalog.default_run(runs)  # the newest finished run, when nothing chosen
        index = next((i for i in range(self.run.count())
                      if self.run.itemData(i).run == (keep or (first and first.run))), 0)
        self.run.setCurrentIndex(index)
        self.run.blockSignals(False)
        self._update()

    def select_run(self, run_folder: Path) -> None:
        for i in range(self.run.count()):
            if self.run.itemData(i).run == Path(run_folder):
                self.run.setCurrentIndex(i)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self._update()

    def selected(self) -> RunLoras | None:
        return self.run.currentData()

    def _parsed(self) -> tuple[list[float], str]:
        try:
            return lora_catalog.parse_strengths(self.strengths.text()), ""
        except ValueError as exc:
            return [], str(exc)

    def _update(self, *_) -> None:
        values, problem = self._parsed()
        theme.set_invalid(self.strengths, bool(problem))
        run = self.selected()
        if run is None:
            text = "No run with a LoRA yet: train one first."
        elif problem:
            text = problem
        else:
            rows = len(run.files)
            text = (f"{rows} LoRA file{'s' if rows != 1 else ''} × {len(values)} strengths = "
                    f"{rows * len(values)} images")
        self.summary.setText(text)
        self.button.setEnabled(run is not None and not problem and not self.busy)
        for button in (self.open_button, self.save, self.show_button):
            button.setEnabled(self.path is not None)

    def _request(self) -> None:
        values, problem = self._parsed()
        run = self.selected()
        if run is not None and not problem:
            self.grid_requested.emit(run, values)

    def show_grid(self, path: Path, rows: list[str] | None = None,
                  cols: list[str] | None = None, cell: tuple[int, int] | None = None) -> None:
        """The worker's grid PNG; with the labels and cell size of the request, its cells are
        shown with labels readable at screen size."""
        self.path = Path(path)
        self.preview.set_grid(QPixmap(str(path)), rows, cols, cell)
        self._update()

    def _save(self) -> None:
        if self.path is not None:
            target = save_copy(self, self.path, "Save the grid as")
            if target is not None:
                self.status_message.emit(f"Saved {target}")
