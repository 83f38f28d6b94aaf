"""The JSON-lines protocol between the GUI and the worker (`python -m training`): typed events and
typed commands, each one dataclass that both sides build, check and parse.

One UTF-8 JSON object per line. Worker -> GUI lines carry an "event" key (an `Event`), GUI ->
worker lines a "cmd" key (a `Request`). Both ends go through the same dataclasses, so a renamed or
dropped field fails loudly on either side instead of quietly becoming a default:

- an event line carries every field of its event (the worker writes it with `to_json`);
- a command line may leave out fields that have a default, never a required one;
- an unknown key, a missing field, a wrong type or an out-of-range value raises ProtocolError,
  which names the field. Building a dataclass checks the same rules, so the GUI cannot send
  (nor the worker emit) what the other side would refuse.

A stdout line that is not a JSON object with an "event" key is log text, so a stray print can
never crash the GUI. Exit codes of the worker are in EXIT_CODES.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

# ProtocolError and limits are part of this module's API (the GUI reads limits for its widgets).
from studio.protocol.check import ProtocolError, check, from_dict, limits, spec  # noqa: F401

PROTOCOL_VERSION = 1

EXIT_OK = 0  # finished, or stopped on request (the done event says which)
EXIT_FAILED = 1  # training failed; an error event with a hint was sent
EXIT_BAD_INPUT = 2  # configuration or dataset problem; an error event names the field or file
EXIT_CODES = {EXIT_OK: "finished or stopped", EXIT_FAILED: "training failed",
              EXIT_BAD_INPUT: "bad configuration or dataset"}


class Phase(enum.StrEnum):
    """What a `status` event says the worker is doing (the Train tab's heading follows it)."""
    LOADING_MODEL = "loading_model"
    CACHING = "caching"
    TRAINING = "training"
    SAMPLING = "sampling"
    SAVING = "saving"
    EVALUATING = "evaluating"  # `python -m training evaluate`: the report card (issue 16)


PHASES = tuple(Phase)

# The worker's samplers (A1111 names; training/generate.py maps them to diffusers schedulers and
# a test keeps the two in step).
SAMPLERS = ("Euler", "Euler a", "DPM++ 2M", "DDIM", "UniPC")
MERGE_FORMATS = ("safetensors", "diffusers")  # training/merge.py FORMATS
MERGE_PRECISIONS = ("fp16", "fp32")  # training/merge.py SAVE_DTYPES
# Image sizes: what the training resolution allows (studio/config/__init__.py), since samples are made at
# it; the VAE halves the size three times, hence multiples of 8.
SIZE_MIN, SIZE_MAX = 32, 2048


# --- Events: worker -> GUI -------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check(self, self.name)

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
    phase: Phase
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
class WarningEvent(Event):
    """Something the user should know and can act on; training goes on. (Not called Warning:
    that would hide Python's builtin wherever it is imported.)"""
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
    # The generation worker: the id of the request that failed; "" for a line it could not read
    # (refused at once, from its reader thread, while another job may be running).
    id: str = ""


# The generation worker (`python -m training serve`):


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
    Hello, Status, Progress, LoraSaved, Sample, Validation, WarningEvent, Done, Error, Ready,
    GenProgress, ImageReady, GenDone)}


def parse_event(line: str) -> Event | None:
    """The event on a stdout line; None when the line is not an event at all (show it as log).
    Raises ProtocolError for an object with an "event" key that does not fit its dataclass."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or "event" not in data:
        return None
    name = data.pop("event")
    if name not in EVENTS:
        raise ProtocolError(f"unknown event {name!r}", "event")
    return from_dict(EVENTS[name], data, name, every_field=True)


# --- Requests (commands): GUI -> worker ------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Request:
    cmd: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check(self, self.cmd)

    def to_json(self) -> str:
        # ASCII only: the worker's stdin encoding is the platform's, not always UTF-8.
        return json.dumps({"cmd": self.cmd, **dataclasses.asdict(self)})


# Training (`python -m training train --control-stdin`):


@dataclass(frozen=True, kw_only=True)
class StopRequest(Request):
    """Stop after the current step and save (a resume point too)."""
    cmd: ClassVar[str] = "stop"


@dataclass(frozen=True, kw_only=True)
class SampleNowRequest(Request):
    cmd: ClassVar[str] = "sample_now"


@dataclass(frozen=True, kw_only=True)
class SaveNowRequest(Request):
    cmd: ClassVar[str] = "save_now"


# Generation (`python -m training serve`):


@dataclass(frozen=True, kw_only=True)
class LoadRequest(Request):
    """Load (or keep) the base model; answered by `ready`. `project`: relative paths' root."""
    cmd: ClassVar[str] = "load"
    base_model: str = spec(non_empty=True)
    project: str = ""


@dataclass(frozen=True, kw_only=True)
class ImageSettings(Request):
    """What every picture is made with: the fields `generate` and `grid` share."""
    prompt: str = spec()
    negative_prompt: str = ""
    seed: int = spec(0, minimum=0, maximum=2**32 - 1)
    steps: int = spec(20, minimum=1, maximum=150)
    cfg_scale: float = spec(7.0, minimum=1.0, maximum=30.0)
    width: int = spec(512, minimum=SIZE_MIN, maximum=SIZE_MAX, multiple_of=8)
    height: int = spec(512, minimum=SIZE_MIN, maximum=SIZE_MAX, multiple_of=8)
    sampler: str = spec("Euler", choices=SAMPLERS)
    id: str = ""  # echoed in the job's events

    def as_request(self, cls: type[R], **changes: Any) -> R:
        """These settings as a request of type `cls` (e.g. a grid's cells as generate)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(ImageSettings)}
        return cls(**{**shared, **changes})


R = typing.TypeVar("R", bound=ImageSettings)


@dataclass(frozen=True, kw_only=True)
class GenerateRequest(ImageSettings):
    """Images with seeds seed, seed+1, …; `adapters` [(path, strength), …] replaces the active
    LoRAs (None keeps them, [] is the base model)."""
    cmd: ClassVar[str] = "generate"
    count: int = spec(1, minimum=1, maximum=100)
    adapters: list[tuple[str, float]] | None = None
    out_dir: str = ""  # "" = the project's generated/


@dataclass(frozen=True, kw_only=True)
class GridRequest(ImageSettings):
    """One labelled PNG at `out`: rows are LoRA files (epochs), columns strengths."""
    cmd: ClassVar[str] = "grid"
    checkpoints: list[str] = spec(non_empty=True)
    strengths: list[float] = spec(non_empty=True)
    out: str = spec(non_empty=True)


@dataclass(frozen=True, kw_only=True)
class MergeRequest(Request):
    """Bake LoRAs at their strengths into a full model at `out`."""
    cmd: ClassVar[str] = "merge"
    adapters: list[tuple[str, float]] = spec(non_empty=True)
    out: str = spec(non_empty=True)
    format: str = spec("safetensors", choices=MERGE_FORMATS)
    precision: str = spec("fp16", choices=MERGE_PRECISIONS)
    id: str = ""


@dataclass(frozen=True, kw_only=True)
class CancelRequest(Request):
    """Interrupt the current job between denoising steps."""
    cmd: ClassVar[str] = "cancel"


@dataclass(frozen=True, kw_only=True)
class QuitRequest(Request):
    cmd: ClassVar[str] = "quit"


REQUESTS: dict[str, type[Request]] = {c.cmd: c for c in (
    StopRequest, SampleNowRequest, SaveNowRequest, LoadRequest, GenerateRequest, GridRequest,
    MergeRequest, CancelRequest, QuitRequest)}
COMMANDS = tuple(REQUESTS)


def request_from_dict(data: dict[str, Any]) -> Request:
    """The request a decoded command line describes; ProtocolError when it does not fit."""
    name = data.get("cmd")
    if not isinstance(name, str):
        raise ProtocolError("not a command (no \"cmd\" name)", "cmd")
    if name not in REQUESTS:
        raise ProtocolError(f"unknown command {name!r} (known: {', '.join(COMMANDS)})", "cmd")
    return from_dict(REQUESTS[name], {k: v for k, v in data.items() if k != "cmd"}, name,
                      every_field=False)


def parse_request(line: str) -> Request:
    """The request on a stdin line; ProtocolError when the line is not a valid command."""
    try:
        data = json.loads(line)
    except ValueError:
        raise ProtocolError(f"not a JSON command: {line.strip()[:80]!r}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"not a JSON object: {line.strip()[:80]!r}")
    return request_from_dict(data)


def command(name: str, **args: Any) -> str:
    """The line for command `name` (built and checked as its Request)."""
    return request_from_dict({"cmd": name, **args}).to_json()


def parse_command(line: str) -> dict[str, Any] | None:
    """A command line as a plain dict (the training worker's stop/sample_now/save_now reader);
    None when it is not one. The generation worker uses parse_request."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("cmd"), str) else None
