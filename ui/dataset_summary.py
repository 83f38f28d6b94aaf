"""The dataset summary (counts, sizes, buckets, caption style, steps) and the list of findings."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QScrollArea, QTabWidget, QVBoxLayout, QWidget)

from studio import estimate
from studio.config import TrainConfig
from studio.dataset import plan, summary
from studio.dataset.report import Report
from ui import theme
from ui.widgets.bars import Bars

STYLE_TEXT = {"tags": "tags (comma-separated)", "sentences": "sentences", "none": "none yet"}


def summary_html(report: Report, cfg: TrainConfig) -> str:
    s = summary.summarize(report, cfg)
    per_epoch, total = estimate.plan_steps(cfg, report.training_items())
    lines = [f"<b>{s.used}</b> of {s.total} images used for training"
             + (f" ({s.excluded} excluded)" if s.excluded else "")]
    if s.folders:  # kohya `N_name` subfolders: each image trained N times per epoch
        top = s.used - sum(n for n, _ in s.folders.values())
        parts = ([f"top folder {top} × {report.repeats}"] if top else []) + [
            f"{name}/ {n} × {times}" for name, (n, times) in s.folders.items()]
        lines.append(f"Repeats: {', '.join(parts)} = <b>{s.image_steps}</b> images per epoch")
    if s.used:
        lines.append(f"Short side <b>{s.min_side}–{s.max_side} px</b> (median {s.median_side})"
                     + (f", <span style='color:{theme.WARNING}'>{s.small} smaller than "
                        f"{cfg.resolution} px</span>" if s.small else ""))
        words = f", about {s.mean_words:.0f} words each" if s.mean_words else ""
        lines.append(f"Captions: <b>{STYLE_TEXT[s.caption_style]}</b>{words}")
        if s.top_tags:
            lines.append("Common tags: " + ", ".join(f"{t} ({n})" for t, n in s.top_tags[:6]))
        how = (f"max steps {cfg.max_steps}" if cfg.max_steps else
               f"{cfg.epochs} epochs × {per_epoch} steps")
        held = plan.validation_count(cfg, s.used)
        val = f", {held} held out for validation" if held else ""
        lines.append(f"Training: <b>{total:,} steps</b> ({how}, batch {cfg.batch_size}{val})")
        if cfg.trigger_word:
            lines.append(f"Trigger word <b>{cfg.trigger_word}</b> is put first in every caption "
                         f"during training")
    blocking = report.blocking()
    if blocking:
        lines.append(f"<span style='color:{theme.ERROR}'><b>{len(blocking)} image(s) cannot be "
                     f"used</b>: exclude or fix them before training</span>")
    return "<br>".join(lines)


class DatasetSummary(QTabWidget):
    """Two tabs: the summary (text and bucket chart side by side) and the findings list; clicking
    a finding selects its image (`image_clicked`)."""

    image_clicked = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.text = QLabel("Checking the images…")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bars = Bars()
        self.bars.setToolTip("Aspect-ratio buckets: the size (in pixels) each image trains at, "
                             "closest to its own shape. Images of one bucket share batches.")
        self.bars_title = QLabel("Training sizes (aspect buckets)")
        theme.set_role(self.bars_title, "muted")
        chart = QVBoxLayout()
        chart.addWidget(self.bars_title)
        chart.addWidget(self.bars)
        chart.addStretch()
        summary = QWidget()
        row = QHBoxLayout(summary)
        row.addWidget(self.text, 3)
        row.addLayout(chart, 2)
        scroll = QScrollArea()  # never clip the summary, whatever the window height
        scroll.setWidget(summary)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)

        self.findings = QListWidget()
        self.findings.setWordWrap(True)
        self.findings.setToolTip("What the dataset doctor found. Click one to select its image.")
        self.findings.itemClicked.connect(
            lambda item: self.image_clicked.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.addTab(scroll, "Summary")
        self.addTab(self.findings, "Findings")

    def show_report(self, report: Report | None, cfg: TrainConfig, mode: str = "all") -> None:
        self.findings.clear()
        if report is None:
            self.text.setText("Checking the images… (every image is opened once, to find "
                              "problems before training does)")
            self.bars.set_data({})
            self.setTabText(1, "Findings")
            return
        self.text.setText(summary_html(report, cfg))
        self.bars.set_data(summary.summarize(report, cfg).buckets)
        shown = [f for f in report.findings
                 if summary.shows(mode, [f], report.is_excluded(f.path))]
        order = {"error": 0, "warning": 1, "info": 2}
        for finding in sorted(shown, key=lambda f: (order.get(f.severity, 3), f.path.name)):
            item = QListWidgetItem(theme.SEVERITY_ICONS.get(finding.severity, "") + str(finding))
            item.setData(Qt.ItemDataRole.UserRole, finding.path)
            item.setToolTip(str(finding))
            self.findings.addItem(item)
        errors = sum(f.fatal for f in report.findings)
        total = len(report.findings)
        label = f"Findings ({len(shown)} of {total})" if len(shown) != total else \
            f"Findings ({total})"
        self.setTabText(1, ("✖ " if errors else "⚠ " if total else "") + label)
        if not total:
            self.findings.addItem("No problems found: the dataset looks good.")

    def set_text(self, html: str) -> None:
        self.text.setText(html)
        self.setCurrentIndex(0)
