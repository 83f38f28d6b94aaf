"""The Report card of a run (issue 16): the base model and each LoRA file in a table (style match,
prompt fidelity, copy risk, validation loss), a small chart per metric across epochs, the
evaluation images large enough to judge, the recommendation and its one line of why, and "Use
this epoch" / "Copy to…" for the chosen file. It reads report_card.json through
studio/runs/report_card.py, the module the worker writes it with; making the card is ui/evaluation.py's.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QGridLayout, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QScrollArea, QSplitter, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from studio.runs import report_card as rc
from studio.runs.project import RunDir
from ui import outputs, theme
from ui.widgets.image_preview import ImagePreview
from ui.widgets.metric_chart import MetricChart

COLUMNS = ("", "LoRA file", "Style match", "Fidelity", "Copy risk", "Val. loss")
COPY_COLUMN = 4
COLUMN_TIPS = {
    "LoRA file": "The epoch (or step) each file was saved at; the file name in its tooltip.",
    "Style match": "Distance of this file's images to the held-out style images, relative to "
                   "the base model's (1.00 = no closer than the base, 0 = the same statistics). "
                   "Lower is closer.",
    "Fidelity": "How often the base model, used as a zero-shot classifier, recognises the "
                "prompt in this file's images (trigger word removed), as a share of the base "
                "model's own score (its row: 100 %). Falling fidelity: the LoRA breaks prompts.",
    "Copy risk": "How close any image comes to a training image: pixel SSIM as a share of the "
                 "best this model's VAE can redraw that image (1.00 = as close as it can "
                 "copy). Flagged as a near copy at ≥ %.2f when the image is also that close "
                 "in the VAE's latent space." % rc.COPY_SSIM,
    "Val. loss": "The validation loss measured in training at this file's step.",
}
IMAGE_SIZE = 132  # the smallest an evaluation image is shown (a 64 px image: 2x, crisp)


def _item(text: str, tip: str = "", align_right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if tip:
        item.setToolTip(tip)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def fidelity_text(row: rc.Row) -> str:
    """Relative to the base model (its own row: 100 %); absolute where the base scored 0."""
    if row.fidelity_vs_base is None:
        return f"{100 * row.fidelity:.0f} % right"
    return f"{100 * row.fidelity_vs_base:.0f} %"


def copy_text(row: rc.Row) -> str:
    if row.copy_flag:
        return f"⚠ copy · {row.copy_ssim:.2f}"
    return f"no · {row.copy_ssim:.2f}"


def x_label(row: rc.Row, rows: list[rc.Row]) -> str:
    """The chart's x label: the epoch where it names one file, else the step."""
    name = rc.row_name(row, rows)
    return name.split(" ", 1)[1] if name.startswith("epoch ") else f"s{row.step or '?'}"


class ReportCardView(QWidget):
    use_file = Signal(object)  # "Use this epoch": the LoRA file to tick in the Generate tab
    evaluate_requested = Signal(object, bool)  # the run folder to (re)make the card of, quick
    cancel_requested = Signal()
    status_message = Signal(str)

    def __init__(self, store, parent=None):
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.card: rc.ReportCard | None = None
        self.rows: list[rc.Row] = []  # the table's rows: base first, then training order
        self.busy = False
        self.has_samples = False  # the run rendered samples (read on reload)
        self.title = QLabel("Report card")
        theme.set_role(self.title, "heading")
        self.evaluate_button = QPushButton("Make report card")
        self.evaluate_button.setToolTip(
            "Render each LoRA file's images for the held-out captions and measure style match, "
            "prompt fidelity and copy risk against the base model.")
        self.evaluate_button.clicked.connect(
            lambda: self.run_dir and self.evaluate_requested.emit(
                self.run_dir, self.quick_box.isEnabled() and self.quick_box.isChecked()))
        self.quick_box = QCheckBox("Quick")
        self.quick_box.setToolTip(
            "Judge each LoRA file on the samples training already rendered (the run's sample "
            "prompts and seed) instead of rendering the held-out captions for every file: only "
            "the base model is rendered. Fewer, different prompts: a rough card in a fraction "
            "of the time. Needs samples (Samples every N epochs) at the files' steps.")
        self.progress_text = QLabel()
        self.progress = QProgressBar()
        # Rendering and judging each image are its steps: a percentage, not an image count.
        self.progress.setFormat("%p %")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop making the report card (nothing is written).")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.progress_row = QWidget()
        strip = QHBoxLayout(self.progress_row)
        strip.setContentsMargins(0, 0, 0, 0)
        strip.addWidget(self.progress_text, 2)
        strip.addWidget(self.progress, 3)
        strip.addWidget(self.cancel_button)
        self.progress_row.hide()
        self.recommendation = QLabel()
        self.recommendation.setWordWrap(True)
        self.recommendation.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = QLabel()
        self.message.setWordWrap(True)
        theme.set_role(self.message, "muted")

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for column, name in enumerate(COLUMNS):
            if name in COLUMN_TIPS:
                self.table.horizontalHeaderItem(column).setToolTip(COLUMN_TIPS[name])
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.use_button = QPushButton("Use this epoch")
        theme.set_role(self.use_button, "primary")
        self.use_button.setToolTip("Tick this LoRA file in the Generate tab (alone, strength 1) "
                                   "to try it.")
        self.use_button.clicked.connect(self._use)
        self.copy_button = QPushButton("Copy to…")
        self.copy_button.setToolTip("Copy this LoRA file into ComfyUI's or A1111's LoRA folder.")
        self.copy_button.setMenu(outputs.copy_menu(self, self.selected_file, store,
                                                   self.status_message.emit))
        actions = QHBoxLayout()
        actions.addWidget(self.use_button)
        actions.addWidget(self.copy_button)
        actions.addStretch()
        self.charts = {name: MetricChart(name, better) for name, better in (
            ("Style match", "lower is closer"), ("Fidelity %", "higher is better"),
            ("Copy risk (SSIM)", f"flag ≥ {rc.COPY_SSIM:.2f}"), ("Validation loss", ""))}
        chart_grid = QGridLayout()
        chart_grid.setSpacing(6)
        for i, chart in enumerate(self.charts.values()):
            chart.setMinimumSize(150, 84)
            chart_grid.addWidget(chart, i // 2, i % 2)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.table, 1)
        left_layout.addLayout(actions)
        right = QWidget()
        right.setLayout(chart_grid)
        self.upper = upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(left)
        upper.addWidget(right)
        upper.setStretchFactor(0, 3)
        upper.setStretchFactor(1, 2)
        upper.setChildrenCollapsible(False)

        self.images_title = QLabel()
        self.images = QWidget()
        self.image_grid = QGridLayout(self.images)
        self.image_grid.setContentsMargins(0, 0, 0, 0)
        self.image_grid.setSpacing(6)
        self.previews: list[ImagePreview] = []
        scroll = QScrollArea()
        scroll.setWidget(self.images)
        scroll.setWidgetResizable(True)
        # A row of images at least 2x a 64 px image; the base model's row below it is in view
        # from about 1080 px of screen height, a scroll away on smaller screens.
        scroll.setMinimumHeight(IMAGE_SIZE + self.fontMetrics().height() + 16)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.images_title)
        lower_layout.addWidget(scroll, 1)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(upper)
        self.split.addWidget(lower)
        self.split.setStretchFactor(0, 2)
        self.split.setStretchFactor(1, 3)
        self.split.setChildrenCollapsible(False)

        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.quick_box)
        head.addWidget(self.evaluate_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.progress_row)
        layout.addWidget(self.recommendation)
        layout.addWidget(self.message)
        layout.addWidget(self.split, 1)
        self.set_run(None)

    # --- what is shown ---------------------------------------------------------------------
    def set_run(self, run_dir: Path | None) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self.reload()

    def reload(self) -> None:
        """Read the run's report_card.json again (after an evaluation, or another run chosen)."""
        run = self.run_dir
        self.card = rc.load(run) if run else None
        quick = " · quick (training samples)" if self.card and self.card.settings.get(
            "quick") else ""
        self.title.setText(f"Report card · {run.name}{quick}" if run else "Report card")
        self.quick_box.setChecked(bool(quick))  # "Evaluate again" keeps the card's kind
        # Quick needs in-training samples (RunDir.samples); without them it would render all.
        self.has_samples = run is not None and any(RunDir(run).samples.glob("*.png"))
        self.message.setText("" if self.card or not run else
                             "This run has no report card yet. Make one to see which LoRA file "
                             "learned the style without breaking the model.")
        self.message.setVisible(bool(self.message.text()))
        self.evaluate_button.setText("Evaluate again" if self.card else "Make report card")
        self._update_buttons()
        card = self.card
        self.rows = [card.base] + sorted(
            (r for r in card.rows if not r.is_base),
            key=lambda r: (r.step if r.step is not None else 1 << 60, r.label)) if card else []
        rec_file = card.recommendation.file if card else None
        self.recommendation.setText(f"<b>Recommended:</b> {card.recommendation.reason}"
                                    if card and rec_file else card.recommendation.reason
                                    if card else "")
        self.recommendation.setVisible(card is not None)
        self._fill_table(rec_file)
        self._fill_charts(rec_file)
        chosen = next((i for i, r in enumerate(self.rows) if r.file and r.file == rec_file),
                      len(self.rows) - 1)
        if self.rows:
            # Shown even when the same row stays selected (no selection signal then): the card
            # read again may have new images under the same names.
            self.table.blockSignals(True)
            self.table.selectRow(chosen)
            self.table.blockSignals(False)
            self._on_selection()
        else:
            self._show_images(None)

    def _fill_table(self, rec_file: str | None) -> None:
        self.table.setRowCount(len(self.rows))
        bold = QFont(self.font())
        bold.setBold(True)
        for i, row in enumerate(self.rows):
            recommended = bool(row.file) and row.file == rec_file
            loss = "–" if row.val_loss is None else f"{row.val_loss:.4f}"
            where = "base model" if row.is_base else rc.row_name(row, self.rows[1:])
            tip = (self.card.base_model if self.card else "") if row.is_base else \
                f"{row.file} (step {row.step})"
            cells = [_item("★" if recommended else "", "Recommended" if recommended else ""),
                     _item(where, tip),
                     _item(f"{row.style:.2f}", ", ".join(f"{k} {v:.2f}" for k, v in
                                                         row.style_parts.items()), True),
                     _item(fidelity_text(row), f"{100 * row.fidelity:.0f} % of its images "
                                               f"recognised", True),
                     _item(copy_text(row), f"closest training image: {row.copy_nearest}"
                                           if row.copy_nearest else ""),
                     _item(loss, align_right=True)]
            for column, cell in enumerate(cells):
                if recommended:
                    cell.setFont(bold)
                if column == COPY_COLUMN and row.copy_flag:
                    cell.setForeground(QColor(theme.ERROR))
                if row.is_base:
                    cell.setForeground(QColor(theme.MUTED))
                self.table.setItem(i, column, cell)
        self.table.resizeColumnsToContents()
        self._fit_table_width()

    def _fit_table_width(self) -> None:
        """Widen the table to what its columns need where the charts can spare it (they keep
        their minimum): at 1280 px the validation loss hid behind a scroll bar."""
        sizes = self.upper.sizes()
        total = sum(sizes)
        if total <= 0:  # not laid out yet: showEvent asks again
            return
        need = (self.table.horizontalHeader().length() + 2 * self.table.frameWidth()
                + self.table.verticalScrollBar().sizeHint().width())
        left = min(need, total - self.upper.widget(1).minimumSizeHint().width())
        if left > sizes[0]:
            self.upper.setSizes([left, total - left])

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._fit_table_width()

    def _fill_charts(self, rec_file: str | None) -> None:
        loras = self.rows[1:]
        labels = [x_label(r, loras) for r in loras]
        marked = next((i for i, r in enumerate(loras) if r.file == rec_file), None)
        base = self.rows[0] if self.rows else None
        series = {
            "Style match": ([r.style for r in loras], base.style if base else None, "{:.2f}"),
            "Fidelity %": ([100 * r.fidelity for r in loras],
                           100 * base.fidelity if base else None, "{:.0f} %"),
            "Copy risk (SSIM)": ([r.copy_ssim for r in loras], base.copy_ssim if base else None,
                                 "{:.2f}"),
            "Validation loss": ([r.val_loss for r in loras], None, "{:.4f}")}
        for name, (values, reference, fmt) in series.items():
            self.charts[name].set_points(list(zip(labels, values)), reference, marked, fmt)

    def selected_row(self) -> rc.Row | None:
        rows = self.table.selectionModel().selectedRows()
        return self.rows[rows[0].row()] if rows and rows[0].row() < len(self.rows) else None

    def selected_file(self) -> Path | None:
        row = self.selected_row()
        return self.run_dir / row.file if row and row.file and self.run_dir else None

    def _on_selection(self) -> None:
        self._show_images(self.selected_row())
        self._update_buttons()

    def _show_images(self, row: rc.Row | None) -> None:
        """The chosen file's images above the base model's (same prompts, same seeds)."""
        # Hidden at once: deleteLater waits for the event loop (and a nested one may not come).
        while self.image_grid.count():
            widget = self.image_grid.takeAt(0).widget()
            if widget is not None:
                widget.hide()
                widget.deleteLater()
        self.previews = []
        if row is None or self.card is None or self.run_dir is None:
            self.images_title.setText("")
            return
        base = self.card.base
        shown = [row] if row.is_base else [row, base]
        prompts = self.card.settings.get("prompts") or []
        self.images_title.setText(
            f"<b>{'The base model' if row.is_base else rc.row_name(row, self.rows[1:])}</b>"
            + ("" if row.is_base else " (top) and the base model (bottom)")
            + (": the training samples' prompts and seed" if self.card.settings.get("quick")
               else ": the same held-out captions and seeds")
            + ". Double-click an image for full size.")
        for r, shown_row in enumerate(shown):
            name = QLabel("the base model" if shown_row.is_base else
                          f"{rc.row_name(shown_row, self.rows[1:])} · {shown_row.label}")
            theme.set_role(name, "muted")
            self.image_grid.addWidget(name, 2 * r, 0, 1, max(1, len(shown_row.images)))
            for c, rel in enumerate(shown_row.images):
                preview = ImagePreview()
                preview.setMinimumSize(IMAGE_SIZE, IMAGE_SIZE)
                path = self.run_dir / rel
                pixmap = QPixmap(str(path))
                preview.set_pixmap(pixmap if not pixmap.isNull() else None, "missing image")
                index = int(Path(rel).stem.split("-")[0]) if Path(rel).stem[:2].isdigit() else -1
                prompt = prompts[index] if 0 <= index < len(prompts) else ""
                preview.title = f"{shown_row.label} · {prompt} · {Path(rel).name}"
                preview.setToolTip(f"{prompt}\n{path.name}\nDouble-click for full size.")
                self.image_grid.addWidget(preview, 2 * r + 1, c)
                self.previews.append(preview)

    # --- actions ---------------------------------------------------------------------------
    def _use(self) -> None:
        path = self.selected_file()
        if path is not None:
            self.use_file.emit(path)

    def _update_buttons(self) -> None:
        row = self.selected_row() if self.rows else None
        has_file = row is not None and not row.is_base
        self.use_button.setEnabled(has_file)
        self.copy_button.setEnabled(has_file)
        if has_file:
            self.use_button.setText(f"Use {rc.row_name(row, self.rows[1:])}")
        else:
            self.use_button.setText("Use this epoch")
        self.evaluate_button.setEnabled(self.run_dir is not None and not self.busy)
        self.quick_box.setEnabled(self.has_samples and not self.busy)

    def set_busy(self, busy: bool) -> None:
        """An evaluation of this view's run is being made (progress shown) or has ended."""
        self.busy = busy
        self.progress_row.setVisible(busy)
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress.setRange(0, 0)
        self._update_buttons()

    def on_progress(self, done: int, total: int, text: str) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        self.progress_text.setText(text)
        if text.startswith("Cancelling"):
            self.cancel_button.setEnabled(False)

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))
