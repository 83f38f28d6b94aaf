"""The report card of a run (issue 16): its data, report_card.json, the copy rule, the epoch recommendation and its "why".

Torch-free so the window shows exactly what the worker (`python -m training evaluate`,
training/evaluate.py) decided: the metrics are measured there, every rule that turns them into a
verdict lives here.

report_card.json (RUN_DIR/report_card.json, written atomically), one row per LoRA file plus the
base model ("base", file null):
- style: the distance of the row's images to the held-out images in style statistics, divided
  by the base model's (per statistic, then averaged; 0 = the same statistics, 1.0 = no closer
  than the base). Statistics (training/style_stats.py): per-layer channel means, variances and
  Gram matrices of the base model's VAE encoder (Gatys et al. 2016; Huang & Belongie 2017) and
  RGB moments + histograms. style_parts: per statistic; style_raw: the absolute distances.
- fidelity: how well the row's images show what their prompts name, 0..1: the base model as
  a zero-shot classifier (Li et al. 2023; Clark & Jaini 2023; training/zero_shot.py) compares
  each image's caption (trigger word removed) with its minimal pairs (one word swapped, listed
  in settings.questions) at settings.timesteps noise levels; the share of (word, noise level)
  comparisons the caption wins. settings.chance: a blind guess's score.
  fidelity_vs_base: fidelity / the base row's.
- copy_flag, copy_ssim, copy_latent, copy_nearest: the closest any image comes to a training
  image (training/copy_risk.py; rule: is_near_copy). copy_ssim is relative to the VAE's own
  round trip of that training image (1.0: as close as the model can draw it).
- val_loss: the validation loss measured in training at this file's step (events.jsonl).
- images: the evaluation images, relative to the run folder (evaluation/<label>/).
recommendation: {epoch, file, reason} (rule: recommend); metadata: {RECOMMENDED_KEY: epoch}.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio import atomic, config

REPORT_FILE = "report_card.json"
IMAGES_DIR = "evaluation"  # the evaluation images, one folder per row, inside the run folder
FORMAT = 1
# The extra kohya-style header key the recommendation travels under (summary and copies).
RECOMMENDED_KEY = "ss_lora_studio_recommended_epoch"

# A LoRA file is recommended only while its prompt fidelity stays within this fraction of the
# base model's (0.15: at least 85 % of the base model's score). Measured on the demo (issue 16,
# training/zero_shot.score): a normal run keeps 91-100 % of base over its 10 epochs (learning the
# style's texture costs a little at low noise levels), the same run at 10x the learning rate
# falls to 75-86 % from its first epoch and 82 % at its last.
DEFAULT_MARGIN = 0.15
# A generated image is a near copy of a training image when it is both structurally almost the
# same picture (pixel SSIM, Wang et al. 2004, divided by that training image's SSIM with its own
# VAE round trip: 1.0 is as close as the model's decoder can draw it; training/copy_risk.py) and
# closer to it in the VAE latent space than this fraction of the typical distance between two
# different training images. Either alone misfires on flat, simple pictures (SSIM is high for
# any two images with the same plain background).
# Measured on the pocket model (issue 16, 6 Dec 2026; 2 copy prompts, i.e. training captions):
# - memorising: 2 training images, rank 64, attention + feed-forward, 600-3000 steps: its
#   outputs for their captions score 0.84-0.90 of the ceiling (raw SSIM 0.67-0.71 against
#   round trips of 0.79) at latent ratio 0.19;
# - the demo run (57 training images, 150 steps): at most 0.66 of the ceiling, latent >= 0.80;
#   the base model 0.64 (0.43 on the 2-image set).
COPY_SSIM = 0.80
COPY_LATENT = 0.5
BASE_LABEL = "base"
# A file "matches the style better than the base" only below this relative distance: smaller
# differences are what a LoRA that learned nothing scores (0.999 for a random tiny LoRA), not
# a style. The demo's first epoch already scores 0.86.
STYLE_BETTER = 0.98


@dataclass
class Row:
    """One line of the card: the base model (file None) or one LoRA file of the run."""

    label: str  # "base" or the LoRA file's name without .safetensors
    file: str | None = None  # LoRA path relative to the run folder
    epoch: int | None = None  # from the file's ss_epoch
    step: int | None = None  # from the file's ss_steps
    style: float = 1.0  # style distance to the held-out images relative to the base (base: 1.0)
    style_parts: dict[str, float] = field(default_factory=dict)  # the same, per statistic
    style_raw: dict[str, float] = field(default_factory=dict)  # absolute distances
    fidelity: float = 0.0  # zero-shot classification accuracy of its images (0..1)
    fidelity_vs_base: float | None = None  # fidelity / base fidelity (None: base scored 0)
    copy_flag: bool = False
    copy_ssim: float = 0.0  # highest SSIM to a training image ÷ its VAE round trip's
    copy_latent: float = 0.0  # lowest latent distance to a training image / typical distance
    copy_nearest: str = ""  # the training image behind the highest SSIM
    val_loss: float | None = None  # validation loss at this file's step (from events.jsonl)
    images: list[str] = field(default_factory=list)  # relative to the run folder

    @property
    def is_base(self) -> bool:
        return self.file is None


@dataclass
class Recommendation:
    epoch: int | None  # None: no file qualifies (reason says why)
    file: str | None
    reason: str


@dataclass
class ReportCard:
    base_model: str
    rows: list[Row]
    recommendation: Recommendation
    settings: dict[str, Any] = field(default_factory=dict)  # prompts, seeds, steps, chance, …
    seconds: float = 0.0
    format: int = FORMAT

    @property
    def base(self) -> Row:
        return next(r for r in self.rows if r.is_base)

    @property
    def metadata(self) -> dict[str, str]:
        """The kohya-style header keys for the recommended file (safetensors metadata is str)."""
        rec = self.recommendation
        return {RECOMMENDED_KEY: str(rec.epoch)} if rec.epoch is not None else {}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["metadata"] = self.metadata
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReportCard":
        rows = [_known(Row, r) for r in data.get("rows", [])]
        rec = _known(Recommendation, data.get("recommendation") or
                     {"epoch": None, "file": None, "reason": ""})
        return cls(base_model=str(data.get("base_model", "")), rows=rows, recommendation=rec,
                   settings=dict(data.get("settings", {})),
                   seconds=float(data.get("seconds", 0.0)), format=int(data.get("format", FORMAT)))


def _known(cls, data: dict[str, Any]):
    # Keys from a newer writer are ignored, as the protocol does.
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def save(card: ReportCard, run_dir: Path) -> Path:
    path = Path(run_dir) / REPORT_FILE
    atomic.write_text(path, json.dumps(card.to_dict(), indent=2, ensure_ascii=False,
                                       allow_nan=False) + "\n")
    return path


def load(run_dir: Path) -> ReportCard | None:
    """The run's card, or None when it has not been evaluated (or the file is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ReportCard.from_dict(data) if isinstance(data, dict) else None


def recommended_epoch(run_dir: Path) -> int | None:
    """For the runs list: the epoch the card recommends, if the run has a card."""
    card = load(run_dir)
    return card.recommendation.epoch if card else None


def evaluate_after(run_dir: Path) -> bool:
    """Whether the app makes the card as soon as this finished run ends: the run's own settings
    ask for it (evaluate_after_training) and it measured a validation loss, i.e. it held out
    images to judge the style against (without them `evaluate` refuses, training/evaluate.py)."""
    cfg = _run_config(run_dir)
    return bool(cfg and cfg.evaluate_after_training
                and validation_losses(Path(run_dir) / "events.jsonl")[0])


def quick_after(run_dir: Path) -> bool:
    """Whether that card is the quick one (quick_report_card: on the training samples)."""
    cfg = _run_config(run_dir)
    return bool(cfg and cfg.quick_report_card)


def _run_config(run_dir: Path) -> config.TrainConfig | None:
    try:
        return config.load(Path(run_dir) / "config.toml")
    except (OSError, ValueError, config.ConfigError):
        return None


# --- The pure rules -----------------------------------------------------------------------


def relative_style(distances: dict[str, float], base: dict[str, float]
                   ) -> tuple[float, dict[str, float]]:
    """(combined, per statistic): each distance divided by the base model's, then averaged, so
    every statistic weighs the same whatever its scale. 0: the same statistics as the held-out
    images; 1.0: no closer than the base model."""
    parts = {}
    for name, d in distances.items():
        b = base.get(name, 0.0)
        if b > 1e-12:
            parts[name] = d / b
        elif d <= 1e-12:
            parts[name] = 0.0  # both already identical to the reference
        # else: the base already matched and this does not: the other statistics decide
    combined = sum(parts.values()) / len(parts) if parts else 1.0
    return combined, parts


def is_near_copy(ssim: float, latent_ratio: float) -> bool:
    return ssim >= COPY_SSIM and latent_ratio <= COPY_LATENT


def fidelity_ok(row: Row, base: Row, margin: float = DEFAULT_MARGIN) -> bool:
    return base.fidelity <= 0 or row.fidelity >= base.fidelity * (1 - margin) - 1e-9


def row_name(row: Row, rows: list[Row]) -> str:
    """"epoch 6" where the epoch names one file; "step 120" for files within one epoch."""
    if row.is_base:
        return "the base model"
    same = [r for r in rows if not r.is_base and r.epoch == row.epoch]
    if row.epoch is not None and len(same) == 1:
        return f"epoch {row.epoch}"
    return f"step {row.step}" if row.step is not None else row.label


def group_names(rows: list[Row], every: list[Row]) -> str:
    """"epochs 8–10", "epochs 2, 5" or "epoch 3" for a set of rows."""
    epochs = [r.epoch for r in rows]
    unique = all(len([x for x in every if not x.is_base and x.epoch == e]) == 1 for e in epochs)
    if not rows or None in epochs or not unique:
        return ", ".join(row_name(r, every) for r in rows)
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    runs: list[list[int]] = []
    for e in sorted(epochs):
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    text = ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
    return f"epochs {text}"


def _fidelity(row: Row) -> str:
    if row.fidelity_vs_base is None:
        return "fidelity not measured (the base model's own images scored 0 %)"
    return f"fidelity {100 * row.fidelity_vs_base:.0f} % of base"


def recommend(rows: list[Row], margin: float = DEFAULT_MARGIN) -> Recommendation:
    """The file with the best style match (lowest relative distance, at most STYLE_BETTER) whose
    fidelity stays within `margin` of the base model's and with no near copy; ties go to the
    earlier file (less training, less risk). The reason names the file and why others lost."""
    base = next(r for r in rows if r.is_base)
    loras = sorted((r for r in rows if not r.is_base),
                   key=lambda r: (r.step if r.step is not None else math.inf, r.label))
    if not loras:
        return Recommendation(None, None, "The run has no LoRA files to compare.")
    weak = [r for r in loras if not fidelity_ok(r, base, margin)]
    copies = [r for r in loras if r.copy_flag and r not in weak]
    eligible = [r for r in loras if r not in weak and r not in copies]
    styled = [r for r in eligible if r.style <= STYLE_BETTER]
    notes = []
    if weak:
        notes.append(f"{group_names(weak, loras)} lose{'s' if len(weak) == 1 else ''} fidelity "
                     f"(below {100 * (1 - margin):.0f} % of base)")
    if copies:
        notes.append(f"{group_names(copies, loras)} near-cop"
                     f"{'ies' if len(copies) == 1 else 'y'} a training image")
    if not styled:
        if eligible:
            notes.insert(0, f"{group_names(eligible, loras)} match the held-out style no better "
                            f"than the base model")
        return Recommendation(None, None, "No file to recommend: " + "; ".join(notes) + ".")
    best = min(styled, key=lambda r: r.style)  # min keeps the first (earliest) of equal ones
    head = f"{row_name(best, loras)}: style {best.style:.2f}, {_fidelity(best)}"
    return Recommendation(best.epoch, best.file, "; ".join([head] + notes))


def validation_losses(events: Path) -> tuple[dict[int, float], dict[int, float]]:
    """({step: loss}, {epoch: loss}) from a run's events.jsonl validation events (the latest
    wins: a resumed run measures a step again)."""
    by_step: dict[int, float] = {}
    by_epoch: dict[int, float] = {}
    try:
        lines = Path(events).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return by_step, by_epoch
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(event, dict) and event.get("event") == "validation":
            try:
                loss = float(event["loss"])
                by_step[int(event["step"])] = loss
                by_epoch[int(event["epoch"])] = loss
            except (KeyError, TypeError, ValueError):
                continue
    return by_step, by_epoch
