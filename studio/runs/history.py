"""What each past run of a project did, read from its events.jsonl (for the runs list)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from studio.runs import report_card
from studio.runs.project import Project, RunDir


@dataclass(frozen=True)
class RunSummary:
    run: RunDir
    status: str  # "finished", "stopped", "failed", "incomplete" (crashed, or still running)
    step: int
    total: int
    adapter: Path | None
    message: str  # the error, for failed runs
    resumable: bool = False  # stopped or cut short, with a complete resume point to go on from
    recommended_epoch: int | None = None  # what its report card recommends (report_card.json)
    recommendation: str = ""  # the card's one line of why ("" without a card)

    @property
    def name(self) -> str:
        return self.run.path.name

    @property
    def outcome(self) -> str:
        """How the run ended, in a few words: "finished", "stopped at step 81 of 600", "failed",
        "not finished" (crashed, or still running)."""
        if self.status == "stopped":
            return f"stopped at step {self.step:,} of {self.total:,}" if self.total else "stopped"
        return {"incomplete": "not finished"}.get(self.status, self.status)


TAIL_BYTES = 64 * 1024


def _tail_lines(path: Path) -> list[str]:
    """The last lines of a file: a long run's events.jsonl holds megabytes of progress lines,
    and the outcome is always at the end (this runs on the GUI thread for every run)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - TAIL_BYTES))
        data = fh.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if size > TAIL_BYTES else lines  # the first may be cut in half


def summarize(run: RunDir) -> RunSummary:
    step = total = 0
    status, adapter, message = "incomplete", None, ""
    try:
        lines = _tail_lines(run.events)
    except OSError:
        lines = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if not isinstance(event, dict):
            continue
        kind = event.get("event")
        if kind == "progress":
            step, total = int(event.get("step", 0)), int(event.get("total", 0))
        elif kind == "done":
            status = "stopped" if event.get("stopped") else "finished"
            adapter = Path(event["path"]) if event.get("path") else None
            step = int(event.get("step", step))
        elif kind == "error":
            status, message = "failed", str(event.get("message", ""))
    if adapter is not None and not adapter.is_file():
        adapter = None
    # The engine's resume points: resume/step-*/state.json (training/resume.py); the worker
    # verifies them itself when asked to resume.
    resumable = status in ("stopped", "incomplete", "failed") and bool(run.resume_points())
    card = report_card.load(run.path)
    rec = card.recommendation if card else None
    return RunSummary(run, status, step, total, adapter, message, resumable,
                      rec.epoch if rec else None, rec.reason if rec else "")


def history(project: Project) -> list[RunSummary]:
    """Newest first."""
    return [summarize(run) for run in reversed(project.list_runs())]
