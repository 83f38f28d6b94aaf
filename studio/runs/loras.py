"""The LoRAs an artist can try in the Generate tab: each run's final file and its step LoRA files,
and the trigger word stored in a file's metadata. Reads safetensors headers only (bounded, no
torch), so the GUI can call it on its thread for a project's few dozen files."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from studio import config
from studio.runs import history as run_history
from studio.runs.project import Project, RunDir
from studio.protocol import SAMPLERS  # noqa: F401 - the names are the protocol's (re-exported)
from studio.safetensors_header import read_header

STRENGTH_MIN, STRENGTH_MAX, STRENGTH_STEP = -1.0, 2.0, 0.05
_STEP = re.compile(r"-step(\d+)$")


@dataclass(frozen=True)
class LoraFile:
    path: Path
    label: str  # "final (step 1,200)", "step 400", or the file name for other files
    step: int = 0  # 0 when unknown
    final: bool = False


@dataclass(frozen=True)
class RunLoras:
    """One run's LoRA files: the final one first (when there is one), then the ones saved during
    training (loras/), newest first."""
    run: Path
    name: str  # the LoRA's output name
    files: tuple[LoraFile, ...]
    unique_title: str = ""  # set when two runs would read the same
    status: str = ""  # run_history's: "finished", "stopped", "failed", "incomplete"
    outcome: str = ""  # the same in words: "stopped at step 81 of 600"

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def title(self) -> str:
        """"inkwash-style · 22 Nov 08:47" (run folders are named by their start time)."""
        return self.unique_title or f"{self.name} · {run_time(self.run.name)}"

    def checkpoints_oldest_first(self) -> list[LoraFile]:
        """Every file of the run in training order (the rows of an epoch × strength grid)."""
        return sorted(self.files, key=lambda f: (f.final, f.step))


def run_time(folder_name: str) -> str:
    """A run folder's stamp (20261122-084722, maybe with a -N suffix) as "22 Nov 08:47"."""
    try:
        stamp = time.strptime(folder_name[:15], "%Y%m%d-%H%M%S")
    except ValueError:
        return folder_name
    return time.strftime("%d %b %H:%M", stamp).lstrip("0") + folder_name[15:]


def metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file; {} when it cannot be read."""
    try:
        return read_header(path)[1]
    except (OSError, ValueError):
        return {}


def _int(text: str | None) -> int:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return 0


def trigger_word(path: Path, meta: dict[str, str] | None = None) -> str:
    """What to put in the prompt to call the LoRA: `modelspec.trigger_phrase`, else the A1111
    sidecar's "activation text", else a kohya file's most frequent caption tag when it is in at
    least half of the training images (`ss_tag_frequency`); "" when none is known."""
    meta = metadata(path) if meta is None else meta
    phrase = meta.get("modelspec.trigger_phrase", "").strip()
    if phrase:
        return phrase
    sidecar = Path(path).with_suffix(".json")
    try:
        text = json.loads(sidecar.read_text(encoding="utf-8")).get("activation text", "")
        if isinstance(text, str) and text.strip():
            return text.strip()
    except (OSError, ValueError, AttributeError):
        pass
    try:
        frequency = json.loads(meta.get("ss_tag_frequency", "") or "{}")
    except ValueError:
        return ""
    counts: dict[str, int] = {}
    for tags in frequency.values() if isinstance(frequency, dict) else ():
        for tag, n in (tags.items() if isinstance(tags, dict) else ()):
            if isinstance(n, int):
                counts[tag.strip()] = counts.get(tag.strip(), 0) + n
    if not counts:
        return ""
    tag, n = max(counts.items(), key=lambda kv: kv[1])
    images = _int(meta.get("ss_num_train_images"))
    return tag if tag and (images == 0 or 2 * n >= images) else ""


def _output_name(run: RunDir) -> str:
    try:
        return config.load(run.config).output_name
    except (OSError, ValueError, config.ConfigError):
        return ""


def run_loras(run: RunDir) -> RunLoras | None:
    """The run's LoRA files, or None when it has none (a failed or just-started run)."""
    name = _output_name(run)
    files: list[LoraFile] = []
    final = run.adapter(name) if name else None
    if final is None or not final.is_file():
        others = sorted(run.path.glob("*.safetensors"))
        final = others[0] if others else None
    if final is not None:
        step = _int(metadata(final).get("ss_steps"))
        files.append(LoraFile(final, f"final (step {step:,})" if step else "final", step, True))
        name = name or final.stem
    steps = []
    for path in run.lora_files():
        meta = metadata(path)
        match = _STEP.search(path.stem)
        step = int(match.group(1)) if match else _int(meta.get("ss_steps"))
        epoch = _int(meta.get("ss_epoch"))  # files saved at an epoch's end (save_every_n_epochs)
        label = f"step {step:,}" if step else path.stem
        steps.append(LoraFile(path, f"epoch {epoch} · {label}" if epoch else label, step))
    steps.sort(key=lambda f: (f.step, f.path.name), reverse=True)
    files += steps
    if not files:
        return None
    summary = run_history.summarize(run)  # the tail of events.jsonl: cheap
    return RunLoras(run.path, name or run.path.name, tuple(files), status=summary.status,
                    outcome=summary.outcome)


def project_loras(project: Project) -> list[RunLoras]:
    """Runs with at least one LoRA file, newest first."""
    found = [r for r in (run_loras(run) for run in reversed(project.list_runs())) if r]
    titles = [r.title for r in found]
    return [dataclasses.replace(r, unique_title=f"{r.name} · {r.run.name}")
            if titles.count(r.title) > 1 else r for r in found]


def default_run(runs: list[RunLoras]) -> RunLoras | None:
    """The run to try first: the newest finished one (a run stopped at step 81 of 600 is rarely
    what the artist wants to judge, issue 14), else the newest with a LoRA file."""
    return next((r for r in runs if r.finished), runs[0] if runs else None)


def find(runs: list[RunLoras], path: Path) -> tuple[RunLoras, LoraFile] | None:
    """The run and file entry for a LoRA path (e.g. the one a finished run just wrote)."""
    path = Path(path).resolve()
    for run in runs:
        for entry in run.files:
            if entry.path.resolve() == path:
                return run, entry
    return None


def parse_strengths(text: str) -> list[float]:
    """"0, 0.25, 0.5" → [0.0, 0.25, 0.5]; raises ValueError saying what is wrong."""
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    if not parts:
        raise ValueError("Enter at least one strength, e.g. 0, 0.5, 1")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"“{part}” is not a number") from None
        if not STRENGTH_MIN <= value <= STRENGTH_MAX:
            raise ValueError(f"{part} is outside {STRENGTH_MIN:g} … {STRENGTH_MAX:g}")
        values.append(value)
    if len(values) > 12:
        raise ValueError("At most 12 strengths (columns)")
    return values


def format_strengths(values) -> str:
    return ", ".join(f"{v:g}" for v in values)
