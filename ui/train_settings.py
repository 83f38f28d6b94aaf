"""The settings column of the Train tab: base model, preset, the simple view, the live estimate
(LoRA size, steps, and the memory planner's GPU figure: ui/memory_panel.py) and "More settings"
(every other TrainConfig field, generated from its metadata)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea,
                               QVBoxLayout, QWidget)

from studio import config, estimate
from studio.base_model.inspect import ModelInfo, resolution_warning
from studio.config import FIELDS, ConfigError, Problem, TrainConfig
from studio.runs.demo import ASSETS
from ui import device, theme
from ui.app_settings import SettingsStore
from ui.config_form import ConfigForm, apply_raw
from ui.memory_panel import MemoryPanel
from ui.model_picker import ModelPicker
from ui.session import ProjectSession
from ui.widgets.collapsible import Collapsible

# Combo boxes sized by a few characters, not by their longest entry (a long path would
# otherwise widen the whole settings column).
SHRINKABLE = QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon

BASIC = ["trigger_word", "rank", "alpha", "epochs", "max_steps", "learning_rate", "resolution",
         "output_name"]
# Edited elsewhere: the model picker, the Dataset tab (folder, exclusions), or nobody.
NOT_IN_FORMS = {"base_model", "dataset_dir", "exclude_images", "schema"}
ADVANCED = [name for name in FIELDS if name not in BASIC and name not in NOT_IN_FORMS]
PRESETS = ASSETS / "presets"
KEEP_ON_PRESET = ("base_model", "dataset_dir", "exclude_images", "trigger_word", "output_name")
# The style recipe to start from for each model family (studio.base_model names).
SUGGESTED_PRESET = {"sd1": "style-sd15", "sdxl": "style-sdxl"}
SUGGESTED = " (suggested)"


def preset_description(path: Path) -> str:
    first = path.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
    return first[0].lstrip("# ").strip() if first and first[0].startswith("#") else path.stem


def preset_order(path: Path) -> tuple[int, str]:
    """gpu-6gb before gpu-12gb (by the number), the others by name."""
    digits = "".join(filter(str.isdigit, path.stem))
    return (int(digits) if path.stem.startswith("gpu-") and digits else 0, path.stem)


class TrainSettings(QScrollArea):
    """Emits `validity_changed()` whenever the problems or the model's usability change."""

    validity_changed = Signal()
    status_message = Signal(str)

    def __init__(self, session: ProjectSession, store: SettingsStore | None = None,
                 worker_factory=None, parent=None):
        super().__init__(parent)
        self.session = session
        self.problems: list[Problem] = []
        self._updating = False
        self.model = ModelPicker()
        self.model.changed.connect(self._on_model)
        # The native size of the model the Resolution setting was last in line with: while the
        # artist leaves Resolution there, it follows the model (see _on_model).
        self._native = 0
        self.resolution_hint = QLabel()
        self.resolution_hint.setWordWrap(True)
        theme.set_role(self.resolution_hint, "warning")
        self.resolution_fix = QPushButton()
        self.resolution_fix.setToolTip("Set Resolution to the size this model was trained at.")
        self.resolution_fix.clicked.connect(self._use_native_resolution)
        # Presets are partial settings files (assets/presets): a style recipe per model family
        # and a GPU-memory tier, applied one over the other.
        self.style_preset = self._preset_combo("Style recipe…", lambda p: not
                                               p.stem.startswith("gpu-"))
        self.style_preset.setToolTip("Start from a tuned recipe for a kind of model. Your base "
                                     "model, dataset, trigger word and output name are kept.")
        self.gpu_preset = self._preset_combo("GPU memory…", lambda p: p.stem.startswith("gpu-"))
        self.gpu_preset.setToolTip("Fit training into your GPU's memory (batch size, gradient "
                                   "checkpointing, optimizer). Apply after the style recipe.")
        self.basic = ConfigForm(BASIC, sliders=("rank",))
        self.advanced = ConfigForm(ADVANCED, grouped=True)
        for form in (self.basic, self.advanced):
            form.changed.connect(self._on_form)
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        self.estimate.setTextFormat(Qt.TextFormat.RichText)
        self.estimate.setToolTip("Computed from the base model's layer shapes as you change the "
                                 "rank.")
        self.memory = MemoryPanel(session, store, worker_factory)
        self.memory.status_message.connect(self.status_message)
        card = QFrame()
        theme.set_role(card, "card")
        card_layout = QVBoxLayout(card)
        card_layout.addWidget(self.estimate)
        card_layout.addWidget(self.memory)
        self.more = Collapsible("More settings", self.advanced)

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(self._heading("Base model"))
        layout.addWidget(self.model)
        hint_row = QHBoxLayout()
        hint_row.addWidget(self.resolution_hint, 1)
        hint_row.addWidget(self.resolution_fix, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(hint_row)
        preset_row = QHBoxLayout()
        preset_row.addWidget(QLabel("Presets:"))
        preset_row.addWidget(self.style_preset, 1)
        preset_row.addWidget(self.gpu_preset, 1)
        layout.addLayout(preset_row)
        layout.addWidget(self._heading("Settings"))
        layout.addWidget(self.basic)
        layout.addWidget(card)
        layout.addWidget(self.more)
        layout.addStretch()
        self.setWidget(body)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        session.project_changed.connect(self._on_project)
        session.config_changed.connect(self._on_config)
        session.report_changed.connect(lambda _: self._update_estimate())

    @staticmethod
    def _heading(text: str) -> QLabel:
        label = QLabel(text)
        theme.set_role(label, "heading")
        return label

    @property
    def model_info(self) -> ModelInfo:
        return self.model.info

    def editor(self, name: str):
        return (self.basic.editors.get(name) or self.advanced.editors.get(name))

    # --- session -> forms -----------------------------------------------------------------
    def _on_project(self, project) -> None:
        root = project.root if project else None
        self.model.set_prediction_type(str(self.session.config.prediction_type))
        self.model.set_value(self.session.config.base_model, root)
        self._native = self.model.info.native_resolution
        self._mark_suggested_preset()
        self._on_config(self.session.config)

    def _on_config(self, cfg: TrainConfig) -> None:
        if self._updating:
            return  # our own change coming back
        self._updating = True
        self.basic.set_config(cfg)
        self.advanced.set_config(cfg)
        self.model.set_prediction_type(str(cfg.prediction_type))
        if self.model.value() != cfg.base_model:
            self.model.set_value(cfg.base_model, self.session.project.root
                                 if self.session.project else None)
            self._native = self.model.info.native_resolution
            self._mark_suggested_preset()
        self._updating = False
        self._validate(cfg, [])

    # --- forms -> session -----------------------------------------------------------------
    def _on_form(self) -> None:
        if self._updating:
            return
        raw = {**self.basic.raw_values(), **self.advanced.raw_values()}
        cfg, problems = apply_raw(self.session.config, raw)
        self._updating = True
        self.session.set_config(cfg)
        self._updating = False
        self._show(problems)

    def _on_model(self, value: str, info: ModelInfo) -> None:
        if self.session.project is None:
            return
        cfg = dataclasses.replace(self.session.config, base_model=value)
        # Resolution follows the model only while the artist has left it at the previous
        # model's native size (or the default when no model was usable): a size they chose
        # themselves is never overwritten; the warning below offers the fix instead.
        followed = self._native or TrainConfig().resolution
        native = info.native_resolution if info.ok else 0
        if native and cfg.resolution == followed and native != cfg.resolution:
            cfg = dataclasses.replace(cfg, resolution=native)
            self.status_message.emit(f"Resolution set to {native} px, the native size of this "
                                     f"{info.architecture} model.")
        if native:
            self._native = native
        self._updating = True
        self.session.set_config(cfg)
        self.basic.set_config(cfg)  # the resolution field, when it followed the model
        self._updating = False
        self._mark_suggested_preset()
        self._validate(self.session.config, [])

    def _use_native_resolution(self) -> None:
        native = self.model.info.native_resolution
        if native and self.session.project is not None:
            self._native = native
            self.session.update(resolution=native)

    def _mark_suggested_preset(self) -> None:
        """Mark the style recipe made for this model's family, e.g. Style SDXL for SDXL."""
        wanted = SUGGESTED_PRESET.get(self.model.info.family) if self.model.info.ok else None
        for i in range(1, self.style_preset.count()):
            path = self.style_preset.itemData(i)
            text = self.style_preset.itemText(i).removesuffix(SUGGESTED)
            self.style_preset.setItemText(i, text + (SUGGESTED if path.stem == wanted else ""))

    def _preset_combo(self, title: str, keep) -> QComboBox:
        combo = QComboBox()
        combo.setSizeAdjustPolicy(SHRINKABLE)
        combo.addItem(title, None)
        files = [p for p in PRESETS.glob("*.toml") if keep(p)] if PRESETS.is_dir() else []
        for path in sorted(files, key=preset_order):
            combo.addItem(path.stem.replace("gpu-", "").replace("gb", " GB")
                          .replace("style-", "Style ").replace("sd15", "SD 1.5")
                          .replace("sdxl", "SDXL"), path)
            combo.setItemData(combo.count() - 1, preset_description(path),
                              Qt.ItemDataRole.ToolTipRole)
        combo.activated.connect(lambda index, c=combo: self._apply_preset(c, index))
        return combo

    def _apply_preset(self, combo: QComboBox, index: int) -> None:
        path = combo.itemData(index)
        combo.setCurrentIndex(0)
        if path is None:
            return
        current = self.session.config
        try:
            cfg = config.load(path, current)  # partial: only the keys it names change
        except ConfigError as exc:
            self._show([Problem(exc.problems[0].field, f"in preset {path.name}: {exc}")])
            return
        keep = {name: getattr(current, name) for name in KEEP_ON_PRESET}
        self.session.set_config(dataclasses.replace(cfg, **keep))
        self.status_message.emit(f"Applied the preset {path.stem}: {preset_description(path)}")

    def _validate(self, cfg: TrainConfig, extra: list[Problem]) -> None:
        _, problems = apply_raw(cfg, {**self.basic.raw_values(), **self.advanced.raw_values()})
        self._show(extra + problems)

    def _show(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.basic.show_problems(problems)
        self.advanced.show_problems(problems)
        if any(p.field in self.advanced.editors for p in problems):
            self.more.set_expanded(True)  # never hide an error inside a folded section
        self._update_estimate()
        self.validity_changed.emit()

    def _update_resolution_hint(self) -> None:
        info, resolution = self.model.info, self.session.config.resolution
        warning = resolution_warning(info, resolution)
        self.resolution_hint.setText(f"⚠ {warning}" if warning else "")
        self.resolution_hint.setVisible(bool(warning))
        self.resolution_fix.setText(f"Use {info.native_resolution} px")
        self.resolution_fix.setVisible(bool(warning))

    def _update_estimate(self) -> None:
        cfg, info = self.session.config, self.model.info
        self._update_resolution_hint()
        lines = []
        est = estimate.estimate(info, cfg)
        if est is None:
            lines.append("LoRA size: choose a base model to see it.")
        else:
            share = f" ({100 * est.share:.2f} % of the UNet)" if est.share is not None else ""
            lines.append(f"LoRA: <b>{estimate.human_count(est.params)}</b> parameters{share} in "
                         f"{est.layers} layers")
            lines.append(f"File: <b>≈ {estimate.human_bytes(est.file_bytes)}</b> "
                         f"({cfg.save_dtype.value})")
        report = self.session.report
        if report is not None:
            items = report.training_items()  # with their folders' repeats, as the worker
            n = len(items)
            per_epoch, total = estimate.plan_steps(cfg, items)
            how = "max steps" if cfg.max_steps else f"{cfg.epochs} epochs × {per_epoch}"
            lines.append(f"Steps: <b>{total:,}</b> ({how}; {n} images, batch {cfg.batch_size})")
            if not device.has_gpu():
                lines.append("No NVIDIA GPU found: training runs on the CPU, many times slower; "
                             "the time left shows once training starts.")
        self.estimate.setText("<br>".join(lines))
        self.memory.refresh(info)  # the planner's figure: cached, or predicted in the background

    def focus_field(self, name: str) -> None:
        editor = self.editor(name)
        if name == "base_model":
            self.model.combo.setFocus()
            return
        if editor is None:
            return
        if name in self.advanced.editors:
            self.more.set_expanded(True)
        self.ensureWidgetVisible(editor)
        editor.editor.setFocus()
