"""The Train tab's GPU memory figure: the planner's predicted peak for the artist's card (this
machine's GPU, or a size they pick), a red line when the settings will not fit, and "Fit to my
GPU" (studio.machine.memory_fit.fit, run by the worker) applied to the form with a Revert."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from studio import config
from studio.machine import memory_fit
from studio.units import human_bytes
from ui import device, theme
from ui.app_settings import SettingsStore
from ui.memory_planner import FIT_FACTOR, MemoryPlanner
from ui.session import ProjectSession


def setting_label(name: str) -> str:
    field = config.FIELDS.get(name)
    return (field.metadata.get("label") if field else None) or name.replace("_", " ")


def shown(value) -> str:
    return {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) \
        else str(value)


class MemoryPanel(QWidget):
    """Emits `status_message(str)` for the status bar when a fit is applied or reverted."""

    status_message = Signal(str)

    def __init__(self, session: ProjectSession, store: SettingsStore | None,
                 worker_factory=None, parent=None):
        super().__init__(parent)
        self.session, self.store = session, store
        self.planner = MemoryPlanner(*([worker_factory] if worker_factory else []), parent=self)
        self.planner.changed.connect(self._show)
        self.planner.fitted.connect(self._apply_fit)
        self.reverts: dict = {}  # setting -> value before the last fit, for Revert
        self.card = QComboBox()
        self.card.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.card.setToolTip("The GPU the prediction is for: this computer's, or the size of "
                             "the card you will train on.")
        remembered = device.card_for(store.data.planner_gpu if store else "")
        for card in device.cards():
            self.card.addItem(card.name, card)
            if card == remembered:
                self.card.setCurrentIndex(self.card.count() - 1)
        self.card.currentIndexChanged.connect(self._on_card)
        self.figure = QLabel()
        self.figure.setWordWrap(True)
        self.figure.setTextFormat(Qt.TextFormat.RichText)
        self.figure.setToolTip("Predicted by running one training step of this model on "
                               "placeholder tensors (no GPU needed): the peak of caching, "
                               "training and sampling, as torch counts it.")
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.fit_button = QPushButton("Fit to my GPU")
        self.fit_button.setToolTip("Find the fastest settings that fit the chosen card with a "
                                   "safety margin: gradient checkpointing only when needed, "
                                   "then a smaller batch (accumulating to the same effective "
                                   "batch), then a leaner optimizer, then a quantized base "
                                   "(only one the trainer can run on this machine).")
        self.fit_button.clicked.connect(self.fit)
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Put back the settings Fit to my GPU changed.")
        self.revert_button.clicked.connect(self.revert)
        self.revert_button.hide()
        self.fit_result = QLabel()
        self.fit_result.setWordWrap(True)
        self.fit_result.hide()

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(QLabel("GPU memory for"))
        top.addWidget(self.card, 1)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.fit_button)
        buttons.addWidget(self.revert_button)
        buttons.addStretch()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.figure)
        layout.addWidget(self.verdict)
        layout.addLayout(buttons)
        layout.addWidget(self.fit_result)
        session.project_changed.connect(self._on_project)
        self._show()

    def gpu_bytes(self) -> int:
        return self.card.currentData().memory_bytes

    def card_name(self) -> str:
        return self.card.currentData().name

    def refresh(self, info) -> None:
        """The settings, dataset or model changed (TrainSettings' estimate update)."""
        report = self.session.report
        self.planner.request(self.session.project, self.session.config,
                             report.training_items() if report is not None else None,
                             info.family if info.ok else "")
        self._show()

    def _on_project(self, _project) -> None:
        self.reverts = {}
        self.revert_button.hide()
        self.fit_result.hide()

    def _on_card(self) -> None:
        if self.store is not None:
            self.store.data.planner_gpu = self.card.currentData().key
            self.store.save()
        self.fit_result.hide()
        self._show()

    # --- the figure -----------------------------------------------------------------------
    def _show(self) -> None:
        p = self.planner
        plan, busy = p.plan, p.state in ("waiting", "predicting", "fitting")
        if plan is not None:
            need = memory_fit.needed_bytes(plan)
            self.figure.setText(f"Predicted peak: <b>{human_bytes(plan.peak_bytes)}</b> "
                                f"({plan.limit}); the card needs ≈ <b>{human_bytes(need)}</b> "
                                f"with CUDA's own overhead")
        elif busy:
            self.figure.setText(f"GPU memory: predicting… (about {p.eta_s():.0f} s)")
        elif p.error:
            self.figure.setText(f"GPU memory: not predicted — the planner said: {p.error}")
        else:
            self.figure.setText("GPU memory: not predicted yet" +
                                (f" ({p.reason})" if p.reason else ""))
        self._show_verdict(plan)
        self.fit_button.setEnabled(plan is not None and p.state != "fitting")
        if p.state == "fitting":
            self._say(f"Fitting to {self.card_name()}… (up to about "
                      f"{p.eta_s() * FIT_FACTOR:.0f} s)", "muted")
        elif self.fit_result.text().startswith("Fitting"):
            self.fit_result.hide()  # cancelled, or failed: the figure says why

    def _show_verdict(self, plan) -> None:
        if plan is None:
            self.verdict.hide()
            return
        card, need, have = self.card_name(), memory_fit.needed_bytes(plan), self.gpu_bytes()
        if memory_fit.fits(plan, have):
            spare = int(have * (1 - memory_fit.SAFETY)) - need
            self.verdict.setText(f"✔ Fits {card} (≈ {human_bytes(spare)} to spare).")
            theme.set_role(self.verdict, "muted")
        else:
            self.verdict.setText(f"✖ Will not fit {card}: these settings need ≈ "
                                 f"{human_bytes(need)} (predicted {plan.limit} peak "
                                 f"{human_bytes(plan.peak_bytes)}). Use Fit to my GPU, or "
                                 f"{memory_fit.WHAT_TO_CHANGE[plan.limit]}.")
            theme.set_role(self.verdict, "error")
        self.verdict.show()

    # --- Fit to my GPU --------------------------------------------------------------------
    def fit(self) -> None:
        self.fit_result.hide()
        self.planner.fit(self.gpu_bytes())

    def _apply_fit(self, found: dict) -> None:
        card = self.card_name()
        if not found.get("ok"):
            self._say(memory_fit.nothing_fits(found, self.gpu_bytes(), card, human_bytes), "error")
            return
        need = human_bytes(found.get("needed_bytes") or 0)
        changes = {memory_fit.CONFIG_NAMES[k]: v for k, v in found.get("changes", {}).items()}
        if not changes:
            self._say(f"These settings already fit {card}; nothing to change.", "muted")
            return
        missing = [name for name in changes if name not in config.FIELDS]
        if missing:  # e.g. a quantized base, which the planner counts but training lacks
            wanted = ", ".join(f"{name.replace('_', ' ')} = {changes[name]}" for name in missing)
            self._say(f"To fit {card} the planner needs {wanted}, which this version of LoRA "
                      f"Studio cannot train with yet; nothing was changed. Lower the resolution "
                      f"or the rank, or train on a larger card.", "error")
            return
        current = self.session.config
        try:
            cfg = config.from_dict(changes, current)
        except config.ConfigError as exc:
            self._say(f"The fit does not apply: {exc}", "error")
            return
        self.reverts = {name: getattr(current, name) for name in changes}
        said = "; ".join(f"{setting_label(n)} {shown(self.reverts[n])} → {shown(v)}"
                         for n, v in changes.items())
        self.session.set_config(cfg)
        self._say(f"Fit to {card}: {said}. Needs ≈ {need}.", "muted")
        self.revert_button.show()
        self.status_message.emit(f"Fit to my GPU: {said}")

    def revert(self) -> None:
        if not self.reverts:
            return
        values = {k: (v.value if hasattr(v, "value") else v) for k, v in self.reverts.items()}
        self.session.set_config(config.from_dict(values, self.session.config))
        self.reverts = {}
        self.revert_button.hide()
        self._say("Reverted the settings Fit to my GPU changed.", "muted")
        self.status_message.emit("Reverted the settings Fit to my GPU changed")

    def _say(self, text: str, role: str) -> None:
        self.fit_result.setText(text)
        theme.set_role(self.fit_result, role)
        self.fit_result.show()
