"""The live view of one training run: phase, progress with step/epoch/ETA, the result or error
banner, the loss plot and the log. It only presents events; the Train tab owns the worker."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QFrame, QHBoxLayout, QLabel, QPlainTextEdit,
                               QProgressBar, QPushButton, QVBoxLayout, QWidget)

from studio import config, protocol
from studio.protocol import crash_hints
from studio.estimate import human_count, human_duration
from studio.protocol import Phase
from ui import theme
from ui.widgets.loss_plot import LossPlot
from ui.widgets.sample_strip import SampleStrip

# One heading per protocol phase (a test checks that every phase has one).
PHASE_TEXT = {Phase.LOADING_MODEL: "Loading the base model…",
              Phase.CACHING: "Preparing the images…", Phase.TRAINING: "Training",
              Phase.SAMPLING: "Rendering samples…", Phase.SAVING: "Saving the LoRA…",
              Phase.EVALUATING: "Making the report card…"}
LOG_LINES = 5000
# Messages of the libraries under the engine (transformers, diffusers, torch, tqdm bars), not
# about the artist's run: "`CLIPImageProcessor` requires torchvision…" in the demo's log
# (issue 14).
# They stay in the run's train.log and behind "Library messages".
NOISE_PREFIXES = ("[transformers]", "[diffusers]", "[torch]", "[accelerate]", "[peft]",
                  "Loading pipeline components", "Loading weights", "Writing model shards",
                  "Fetching ", "warnings.warn(", "  warnings.warn(")
NOISE_PARTS = ("FutureWarning:", "UserWarning:", "DeprecationWarning:", "requires torchvision",
               "it/s]", "s/it]", "%|")


def library_noise(line: str) -> bool:
    """A line from a library rather than from the training engine (see NOISE_PREFIXES)."""
    text = line.lstrip("\r")
    return text.startswith(NOISE_PREFIXES) or any(part in text for part in NOISE_PARTS)


class LogView(QWidget):
    """The engine's log for the artist; library messages only when asked for."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lines: list[str] = []
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(LOG_LINES)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setToolTip("What the training engine reports (everything, library messages "
                             "too, is saved as train.log in the run folder).")
        self.details = QCheckBox("Library messages")
        self.details.setToolTip("Also show the messages of the libraries the engine uses "
                                "(warnings about versions and optional packages, progress bars); "
                                "useful when asking for help.")
        self.details.toggled.connect(self._refill)
        self.hidden = QLabel()
        theme.set_role(self.hidden, "muted")
        bar = QHBoxLayout()
        bar.addStretch()
        bar.addWidget(self.hidden)
        bar.addWidget(self.details)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text, 1)
        layout.addLayout(bar)

    def appendPlainText(self, line: str) -> None:  # noqa: N802 - QPlainTextEdit's name
        self.lines = self.lines[-LOG_LINES:] + [line]
        if self.details.isChecked() or not library_noise(line):
            self.text.appendPlainText(line)
        else:
            self._count()

    def toPlainText(self) -> str:  # noqa: N802
        return self.text.toPlainText()

    def clear(self) -> None:
        self.lines.clear()
        self.text.clear()
        self._count()

    def _count(self) -> None:
        n = sum(1 for line in self.lines if library_noise(line))
        self.hidden.setText(f"{n} library message{'s' if n != 1 else ''} hidden"
                            if n and not self.details.isChecked() else "")

    def _refill(self) -> None:
        self.text.setPlainText("\n".join(line for line in self.lines if self.details.isChecked()
                                         or not library_noise(line)))
        self._count()



class Banner(QFrame):
    """The outcome of a run: green with the LoRA's actions, or red with the error and a hint."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.body = QLabel()
        self.body.setWordWrap(True)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open in Generate")
        self.open_button.setToolTip("Try the LoRA now: the Generate tab with this LoRA enabled.")
        self.show_button = QPushButton("Show in folder")
        self.show_button.setToolTip("Open the run folder in your file manager.")
        self.copy_button = QPushButton("Copy to…")
        self.copy_button.setToolTip("Copy the LoRA into another app's LoRA folder (remembered).")
        self.report_button = QPushButton("Report card")
        self.report_button.setToolTip("Which of the run's LoRA files to keep: style match, "
                                      "prompt fidelity and copy risk per epoch.")
        self.field_button = QPushButton("Go to setting")
        self.field_button.setToolTip("Show the setting this error is about.")
        self.fix_button = QPushButton("Apply suggested settings")
        self.fix_button.setToolTip("Change the settings as the error suggests; then press Train.")
        self.fix: dict = {}
        head = QHBoxLayout()  # title and actions on one row: the banner stays short
        head.addWidget(self.title, 1)
        head.addWidget(self.open_button)
        head.addWidget(self.show_button)
        head.addWidget(self.copy_button)
        head.addWidget(self.report_button)
        head.addWidget(self.field_button)
        head.addWidget(self.fix_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addLayout(head)
        layout.addWidget(self.body)
        self.hide()

    def show_outcome(self, ok: bool, title: str, body: str, has_lora: bool = False,
                     field: str = "", fix: dict | None = None) -> None:
        theme.set_role(self, "banner-ok" if ok else "banner-error")
        self.title.setText(f"<b>{title}</b>")
        self.body.setText(body)
        self.body.setVisible(bool(body))
        self.copy_button.setVisible(has_lora)
        self.open_button.setVisible(has_lora)
        self.report_button.setVisible(has_lora)
        self.show_button.setVisible(True)
        self.field_button.setVisible(bool(field))
        self.field_button.setProperty("field", field)
        self.fix = dict(fix or {})
        self.fix_button.setVisible(bool(self.fix))
        if self.fix:
            changes = ", ".join(f"{k} = {v}" for k, v in self.fix.items())
            self.fix_button.setToolTip(f"Set {changes}; then press Train.")
        self.show()


class RunPanel(QWidget):
    field_requested = Signal(str)  # the artist wants to see the setting an error names
    fix_requested = Signal(dict)  # the artist accepts the settings an error suggests

    def __init__(self, parent=None):
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.adapter: Path | None = None
        self.error: protocol.Error | None = None
        self.started_at = 0.0
        self.phase = QLabel("Ready to train.")
        theme.set_role(self.phase, "heading")
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.detail = QLabel(" ")
        theme.set_role(self.detail, "muted")
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        theme.set_role(self.warning, "warning")
        self.warning.hide()
        self.samples = SampleStrip()
        self.banner = Banner()
        self.banner.field_button.clicked.connect(
            lambda: self.field_requested.emit(self.banner.field_button.property("field")))
        self.banner.fix_button.clicked.connect(lambda: self.fix_requested.emit(self.banner.fix))
        self.plot = LossPlot()
        log_scale = QCheckBox("Log scale")
        log_scale.setToolTip("Show the loss on a logarithmic axis (helps when it spans a wide "
                             "range).")
        log_scale.toggled.connect(self.plot.set_log_scale)
        self.log = LogView()
        plot_head = QHBoxLayout()
        plot_head.addWidget(QLabel("<b>Loss</b>"))
        plot_head.addStretch()
        plot_head.addWidget(log_scale)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.phase)
        layout.addWidget(self.progress)
        layout.addWidget(self.detail)
        layout.addWidget(self.warning)
        layout.addWidget(self.banner)
        layout.addLayout(plot_head)
        layout.addWidget(self.plot, 3)
        layout.addWidget(self.samples)

    def begin(self, run_dir: Path | None) -> None:
        """A run starts; `run_dir` is known only when resuming, else the worker's first status
        event names the folder it created."""
        self.run_dir, self.adapter, self.error = run_dir, None, None
        self.started_at = time.monotonic()
        self.banner.hide()
        self.warning.hide()
        self.plot.clear()
        self.samples.clear()
        self.log.clear()
        self.phase.setText("Starting the training engine…")
        self.progress.setRange(0, 0)  # busy: the worker needs a few seconds to import
        self.detail.setText("The first few seconds are spent loading libraries.")

    def on_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def on_event(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.Hello):
            self.on_log(f"Training engine started (pid {event.pid}).")
        elif isinstance(event, protocol.Status):
            self._on_status(event)
        elif isinstance(event, protocol.Progress):
            self._on_progress(event)
        elif isinstance(event, protocol.LoraSaved):
            self.on_log(f"LoRA file saved at step {event.step}: {event.path}")
        elif isinstance(event, protocol.Sample):
            self.samples.show_samples(event.step, event.epoch, event.paths, event.prompts)
            self.on_log(f"Samples at step {event.step}: {len(event.paths)} image(s)")
        elif isinstance(event, protocol.Validation):
            self.plot.add_validation(event.step, event.loss)
            self.on_log(f"Validation loss at epoch {event.epoch}: {event.loss:.4f}")
        elif isinstance(event, protocol.WarningEvent):
            text = event.message + (f" {event.hint}" if event.hint else "")
            self.warning.setText("⚠ " + text)
            self.warning.show()
            self.on_log("WARNING: " + text)
        elif isinstance(event, protocol.Done):
            self.adapter = Path(event.path)
        elif isinstance(event, protocol.Error):
            self.error = event
            self.on_log(f"ERROR: {event.message}" + (f"\nHint: {event.hint}" if event.hint
                                                     else ""))

    def _on_status(self, event: protocol.Status) -> None:
        self.phase.setText(PHASE_TEXT[event.phase])
        self.on_log(f"[{event.phase}] {event.text}")
        details = event.details or {}
        if "run_dir" in details:
            self.run_dir = Path(details["run_dir"])
        if event.phase == "caching" and details.get("total"):
            self.progress.setRange(0, int(details["total"]))
            self.progress.setValue(int(details.get("done", 0)))
            self.progress.setFormat("%v / %m images")
            self.detail.setText(event.text)
        elif event.phase == "training" and "trainable_params" in details:
            steps = int(details.get("steps", 0))
            self.progress.setRange(0, max(steps, 1))
            self.progress.setValue(0)
            self.progress.setFormat("%p%")
            self.plot.clear(steps)
            share = (f" ({100 * details['trainable_params'] / details['unet_params']:.2f} % of "
                     f"the UNet)" if details.get("unet_params") else "")
            self.detail.setText(f"{human_count(int(details['trainable_params']))} LoRA "
                                f"parameters{share}, {steps:,} steps")
        elif event.phase == "loading_model":
            self.progress.setRange(0, 0)  # busy: loading takes seconds to minutes
        elif event.phase == "saving":
            self.progress.setFormat("Saving… %p%")

    def _on_progress(self, p: protocol.Progress) -> None:
        if self.progress.maximum() != p.total:
            self.progress.setRange(0, max(p.total, 1))
            self.progress.setFormat("%p%")
        self.progress.setValue(p.step)
        self.phase.setText(PHASE_TEXT[Phase.TRAINING])
        self.plot.add(p.step, p.loss, p.total)
        eta = "estimating…" if p.eta_s is None else human_duration(p.eta_s)
        self.detail.setText(f"Step {p.step:,} / {p.total:,} · epoch {p.epoch} · loss "
                            f"{p.loss:.4f} · lr {p.lr:.2g} · elapsed "
                            f"{human_duration(time.monotonic() - self.started_at)} · ETA {eta}")

    def finish(self, exit_code: int, crashed: bool, stderr_tail: str, stopped: bool) -> str:
        """Show the outcome; returns a one-line summary for the status bar."""
        if self.progress.maximum() == 0:  # still "busy": the run ended before training began
            self.progress.setRange(0, 1)
        self.progress.setFormat("%p%")
        elapsed = human_duration(time.monotonic() - self.started_at)
        if exit_code == protocol.EXIT_OK and not crashed and self.adapter is not None:
            title = ("Stopped early; the LoRA so far was saved." if stopped else
                     "Done! Your LoRA is ready.")
            self.phase.setText("Stopped" if stopped else "Finished")
            self.banner.show_outcome(True, title, f"{self.adapter} · training took {elapsed}",
                                     has_lora=True)
            return f"{title} {self.adapter.name}"
        self.phase.setText("Training failed")
        if self.error is not None and not crashed:
            body = self.error.message.replace("\n", "<br>")
            if self.error.hint:
                body += f"<br><br><b>What to do:</b> {self.error.hint}"
            field = self.error.field if self.error.field in config.FIELDS else ""
            title = "Training could not run." if exit_code == protocol.EXIT_BAD_INPUT else \
                "Training failed."
            self.banner.show_outcome(False, title, body, field=field,
                                     fix=getattr(self.error, "fix", None))
            return "Training could not run: " + self.error.message.splitlines()[0]
        hint = crash_hints.hint(stderr_tail, exit_code, crashed)
        tail = "<br>".join(line.replace("<", "&lt;") for line in
                           stderr_tail.strip().splitlines()[-8:])
        how = "was stopped by force" if exit_code == -9 and stopped else \
            f"crashed (exit code {exit_code})"
        self.banner.show_outcome(False, f"The training process {how}.",
                                 f"<b>What to do:</b> {hint}<br><br><tt>{tail}</tt>")
        return f"The training process {how}."
