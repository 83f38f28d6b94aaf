"""The JSON-lines protocol between the GUI and the worker (`python -m training`).

One UTF-8 JSON object per line. Worker -> GUI lines carry an "event" key, GUI -> worker lines a
"cmd" key. The GUI treats a stdout line that is not a known event as log text, so a stray print
can never crash it. Exit codes of the worker are in EXIT_CODES.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

PROTOCOL_VERSION = 1

EXIT_OK = 0  # finished, or stopped on request (the done event says which)
EXIT_FAILED = 1  # training failed; an error event with a hint was sent
EXIT_BAD_INPUT = 2  # configuration or dataset problem; an error event names the field or file
EXIT_CODES = {EXIT_OK: "finished or stopped", EXIT_FAILED: "training failed",
              EXIT_BAD_INPUT: "bad configuration or dataset"}

PHASES = ("loading_model", "caching", "training", "saving")


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = ""

    def to_json(self) -> str:
        return json.dumps({"event": self.name, **dataclasses.asdict(self)}, ensure_ascii=False)


@dataclass(frozen=True)
class Hello(Event):
    name: ClassVar[str] = "hello"
    protocol: int = PROTOCOL_VERSION
    pid: int = 0
    command: str = ""
    run_dir: str = ""


@dataclass(frozen=True)
class Status(Event):
    name: ClassVar[str] = "status"
    phase: str = ""
    text: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress(Event):
    name: ClassVar[str] = "progress"
    step: int = 0
    total: int = 0
    epoch: int = 0
    loss: float = 0.0
    lr: float = 0.0
    eta_s: float | None = None


@dataclass(frozen=True)
class LoraSaved(Event):
    """A LoRA file saved during training (`loras/<name>-stepNNNNNN.safetensors`), to compare
    stages; not the final LoRA (see Done) and not a resume point (those are not announced)."""
    name: ClassVar[str] = "lora_saved"
    step: int = 0
    path: str = ""


@dataclass(frozen=True)
class Sample(Event):
    """In-training sample images (PNG paths, with A1111 parameters inside)."""
    name: ClassVar[str] = "sample"
    step: int = 0
    epoch: int = 0
    paths: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Validation(Event):
    """Loss on held-out images with fixed noise and timesteps: comparable between epochs."""
    name: ClassVar[str] = "validation"
    step: int = 0
    epoch: int = 0
    loss: float = 0.0


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the protocol's name for it
    """Something the user should know and can act on; training goes on."""
    name: ClassVar[str] = "warning"
    message: str = ""
    hint: str = ""


@dataclass(frozen=True)
class Done(Event):
    name: ClassVar[str] = "done"
    path: str = ""
    stopped: bool = False
    step: int = 0
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Error(Event):
    name: ClassVar[str] = "error"
    message: str = ""
    hint: str = ""
    field: str = ""  # the config field or file the problem is about, when there is one
    fix: dict[str, Any] = dataclasses.field(default_factory=dict)  # settings that fix it


# --- The generation worker (`python -m training serve`) ------------------------------------


@dataclass(frozen=True)
class Ready(Event):
    """The base model is loaded (sent after each `load`); `base_loads` counts loads so far."""
    name: ClassVar[str] = "ready"
    base_model: str = ""
    seconds: float = 0.0
    base_loads: int = 0


@dataclass(frozen=True)
class GenProgress(Event):
    name: ClassVar[str] = "gen_progress"
    id: str = ""
    image: int = 0  # index of the image being made
    count: int = 1
    step: int = 0
    total: int = 0


@dataclass(frozen=True)
class ImageReady(Event):
    name: ClassVar[str] = "image"
    id: str = ""
    index: int = 0
    seed: int = 0
    path: str = ""
    parameters: str = ""  # A1111 infotext


@dataclass(frozen=True)
class GenDone(Event):
    name: ClassVar[str] = "gen_done"
    id: str = ""
    paths: list[str] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0


EVENTS: dict[str, type[Event]] = {c.name: c for c in (
    Hello, Status, Progress, LoraSaved, Sample, Validation, Warning, Done, Error, Ready,
    GenProgress, ImageReady, GenDone)}


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate; the `generate` command's arguments. `adapters`: [[path, strength], …]
    replaces the active LoRAs (None keeps them)."""
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    sampler: str = "Euler"
    count: int = 1
    adapters: list[list] | None = None
    out_dir: str = ""
    id: str = ""

    @classmethod
    def from_command(cls, cmd: dict[str, Any]) -> "GenerateRequest":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cmd) - known - {"cmd"})
        if unknown:
            raise ValueError(f"unknown generate argument(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in cmd.items() if k in known})


def parse_event(line: str) -> Event | None:
    """The event on a stdout line, or None when the line is not a (known) event: show it as log."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("event") not in EVENTS:
        return None
    cls = EVENTS[data.pop("event")]
    known = {f.name for f in dataclasses.fields(cls)}
    # Unknown keys from a newer worker are ignored rather than fatal.
    return cls(**{k: v for k, v in data.items() if k in known})


# Training: stop, sample_now, save_now. Serve: load{base_model, project},
# generate{GenerateRequest}, grid{…}, merge{adapters, out, format, precision}, cancel, quit.
COMMANDS = ("stop", "sample_now", "save_now", "load", "generate", "grid", "merge", "cancel",
            "quit")


def command(name: str, **args: Any) -> str:
    return json.dumps({"cmd": name, **args})


def parse_command(line: str) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("cmd"), str) else None
