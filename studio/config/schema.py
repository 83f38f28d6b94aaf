"""The settings files' schema version, and how files written under older schemas still load."""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 2
# Keys renamed since an older schema, old name -> current name. Files that use the old names still
# load (project.toml, a run's config.toml, --set), and are written back under the new ones.
# Schema 2: "checkpoint" meant both a LoRA file and a resume point; the resume-point keys say so.
RENAMED = {"checkpoint_every_minutes": "resume_point_every_minutes",
           "keep_checkpoints": "keep_resume_points"}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with keys renamed since older schemas under their current names (the current name
    wins when a file has both), and an older schema number raised to the current one."""
    out = {RENAMED.get(k, k): v for k, v in data.items()
           if not (k in RENAMED and RENAMED[k] in data)}
    if type(out.get("schema")) is int and out["schema"] < SCHEMA_VERSION:
        out["schema"] = SCHEMA_VERSION
    return out
