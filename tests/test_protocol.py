"""The GUI <-> worker wire format: every event and command round-trips, and a renamed, dropped or
ill-typed field is refused (never silently defaulted), on both sides of the boundary."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from studio import config, protocol
from studio.protocol import ProtocolError

ROOT = Path(__file__).resolve().parents[1]
ALL_TYPES = [*protocol.EVENTS.values(), *protocol.REQUESTS.values()]


def sample_value(cls: type, f: dataclasses.Field) -> typing.Any:
    """A valid value for field `f` of `cls` that differs from its default where it has one, so a
    field that to_json dropped would not come back as an equal default."""
    hint = typing.get_type_hints(cls)[f.name]
    meta = f.metadata
    if "choices" in meta:
        return meta["choices"][-1]
    if "minimum" in meta:
        value = (meta["minimum"] + meta["maximum"]) / 2
        if isinstance(meta["minimum"], int):
            value = int(value) // meta.get("multiple_of", 1) * meta.get("multiple_of", 1)
        return value
    return _by_type(hint, f.name)


def _by_type(hint: typing.Any, name: str) -> typing.Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is not None and type(None) in args:  # X | None: a real X
        return _by_type(next(a for a in args if a is not type(None)), name)
    if isinstance(hint, type) and issubclass(hint, protocol.Phase):
        return protocol.Phase.SAMPLING
    if origin is list:
        return [_by_type(args[0], name), _by_type(args[0], name)]
    if origin is tuple:
        return tuple(_by_type(a, name) for a in args)
    if origin is dict:
        return {"k": 1, "nested": [1, "x"]}
    return {int: 7, float: 0.25, str: f"{name}-value é", bool: True}[hint]


def sample(cls: type):
    return cls(**{f.name: sample_value(cls, f) for f in dataclasses.fields(cls)})


def parse(line: str):
    data = json.loads(line)
    return protocol.parse_event(line) if "event" in data else protocol.parse_request(line)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_every_event_and_request_round_trips(cls):
    obj = sample(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            assert getattr(obj, f.name) != f.default, f.name  # the sample is not the default
    line = obj.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert data.get("event", data.get("cmd")) == getattr(cls, "name", getattr(cls, "cmd", None))
    assert parse(line) == obj


def test_the_registries_hold_every_dataclass_of_the_module():
    """A new event or command that is not registered could never be parsed."""
    events = {c for c in vars(protocol).values() if isinstance(c, type) and
              issubclass(c, protocol.Event) and c.name}
    requests = {c for c in vars(protocol).values() if isinstance(c, type) and
                issubclass(c, protocol.Request) and c.cmd}
    assert events == set(protocol.EVENTS.values()) and len(events) == 13
    assert requests == set(protocol.REQUESTS.values()) and len(requests) == 9


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_a_renamed_or_unknown_field_is_refused(cls):
    data = json.loads(sample(cls).to_json())
    fields = [f.name for f in dataclasses.fields(cls)]
    for name in fields:  # what a worker or GUI of another version would send after a rename
        renamed = {(k + "_old" if k == name else k): v for k, v in data.items()}
        with pytest.raises(ProtocolError, match=f"unknown field.*{name}_old") as caught:
            parse(json.dumps(renamed))
        assert caught.value.field == f"{name}_old"
    with pytest.raises(ProtocolError, match="unknown field"):
        parse(json.dumps({**data, "from_the_future": 1}))


@pytest.mark.parametrize("cls", protocol.EVENTS.values(), ids=lambda c: c.__name__)
def test_an_event_missing_any_field_is_refused(cls):
    data = json.loads(sample(cls).to_json())
    for f in dataclasses.fields(cls):
        with pytest.raises(ProtocolError, match=f"{f.name} is missing") as caught:
            protocol.parse_event(json.dumps({k: v for k, v in data.items() if k != f.name}))
        assert caught.value.field == f.name


@pytest.mark.parametrize("cls", protocol.REQUESTS.values(), ids=lambda c: c.__name__)
def test_a_request_may_leave_out_defaults_but_not_required_fields(cls):
    data = json.loads(sample(cls).to_json())
    for f in dataclasses.fields(cls):
        line = json.dumps({k: v for k, v in data.items() if k != f.name})
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            with pytest.raises(ProtocolError, match=f"{cls.cmd}: {f.name} is missing"):
                protocol.parse_request(line)
        else:
            assert getattr(protocol.parse_request(line), f.name) == f.default


@pytest.mark.parametrize("args, field, words", [
    (dict(width=0), "width", "between 32 and 2048, not 0"),
    (dict(width=500), "width", "multiple of 8, not 500"),
    (dict(height=4096), "height", "between"),
    (dict(steps=0), "steps", "between 1 and 150"),
    (dict(steps=151), "steps", "between 1 and 150"),
    (dict(steps="20"), "steps", "whole number"),
    (dict(steps=20.5), "steps", "whole number"),
    (dict(seed=True), "seed", "whole number"),
    (dict(seed=-1), "seed", "between"),
    (dict(cfg_scale="high"), "cfg_scale", "number"),
    (dict(cfg_scale=0.5), "cfg_scale", "between"),
    (dict(count=0), "count", "between"),
    (dict(sampler="Nope"), "sampler", "one of Euler"),
    (dict(prompt=None), "prompt", "text"),
    (dict(adapters=[["a.safetensors", "strong"]]), "adapters", r"adapters\[0\]\[1\] must be a "
                                                               "number"),
    (dict(adapters=[["a.safetensors"]]), "adapters", "adapters"),
    (dict(adapters="a.safetensors"), "adapters", "list"),
])
def test_generate_values_are_checked_and_the_field_named(args, field, words):
    line = json.dumps({"cmd": "generate", "prompt": "a fox", **args})
    with pytest.raises(ProtocolError, match=words) as caught:
        protocol.parse_request(line)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"generate: {field}")
    with pytest.raises(ProtocolError):  # building it in the GUI fails the same way
        protocol.GenerateRequest(**{"prompt": "a fox", **args})


def test_other_commands_are_checked_too():
    cases = [('{"cmd": "load"}', "base_model", "load: base_model is missing"),
             ('{"cmd": "load", "base_model": "  "}', "base_model", "must not be empty"),
             ('{"cmd": "grid", "prompt": "p", "checkpoints": [], "strengths": [1], "out": "g"}',
              "checkpoints", "must not be empty"),
             ('{"cmd": "merge", "adapters": [["a", 1]], "out": "m", "precision": "fp8"}',
              "precision", "one of fp16, fp32"),
             ('{"cmd": "merge", "adapters": [["a", 1]], "out": "m", "format": "ckpt"}',
              "format", "one of safetensors, diffusers"),
             ('{"cmd": "cancel", "now": true}', "now", "unknown field"),
             ('{"cmd": "teleport"}', "cmd", "unknown command 'teleport'"),
             ('{"no": "cmd"}', "cmd", "not a command"),
             ("stop", "", "not a JSON command"),
             ("[1]", "", "not a JSON object")]
    for line, field, words in cases:
        with pytest.raises(ProtocolError, match=words) as caught:
            protocol.parse_request(line)
        assert caught.value.field == field, line


def test_values_come_back_in_their_declared_types():
    req = protocol.parse_request('{"cmd": "generate", "prompt": "p", "cfg_scale": 5, '
                                 '"adapters": [["a.safetensors", 1]]}')
    assert req.cfg_scale == 5.0 and isinstance(req.cfg_scale, float)
    assert req.adapters == [("a.safetensors", 1.0)]
    status = protocol.parse_event(protocol.Status("sampling", "x").to_json())
    assert status.phase is protocol.Phase.SAMPLING and status.phase == "sampling"


def test_phases_are_an_enum_that_the_status_event_enforces():
    assert [p.value for p in protocol.PHASES] == ["loading_model", "caching", "training",
                                                  "sampling", "saving", "evaluating"]
    with pytest.raises(ProtocolError, match="phase must be one of"):
        protocol.Status("warming_up")
    with pytest.raises(ProtocolError, match="phase"):
        protocol.parse_event('{"event": "status", "phase": "warming_up", "text": "", '
                             '"details": {}}')


def test_a_grid_is_built_from_the_same_settings_as_generate():
    settings = protocol.GenerateRequest(prompt="p", seed=9, steps=4, width=64, height=64,
                                        count=3, adapters=[("a.safetensors", 1.0)])
    grid = settings.as_request(protocol.GridRequest, checkpoints=["a", "b"], strengths=[0, 1],
                               out="g.png")
    cell = grid.as_request(protocol.GenerateRequest, count=1, adapters=None)
    shared = [f.name for f in dataclasses.fields(protocol.ImageSettings)]
    assert all(getattr(cell, n) == getattr(settings, n) == getattr(grid, n) for n in shared)


def test_generation_limits_accept_every_setting_the_trainer_samples_with():
    """Samples during training are GenerateRequests made from the config: every config value
    must be a valid request, or training would fail at its first sample."""
    pairs = [("resolution", "width"), ("sample_steps", "steps"),
             ("sample_cfg_scale", "cfg_scale"), ("seed", "seed")]
    for cfg_name, req_name in pairs:
        meta = next(f.metadata for f in dataclasses.fields(config.TrainConfig)
                    if f.name == cfg_name)
        lim = protocol.limits(protocol.GenerateRequest, req_name)
        assert lim["minimum"] <= meta["minimum"] and meta["maximum"] <= lim["maximum"], cfg_name
    assert protocol.limits(protocol.GenerateRequest, "width")["multiple_of"] == 8


def test_lines_that_are_not_events_are_log_text():
    assert protocol.parse_event("Loading weights 50%") is None
    assert protocol.parse_event("[1, 2]") is None
    assert protocol.parse_event('{"loss": 1}') is None  # a library's JSON, not ours
    with pytest.raises(ProtocolError, match="unknown event 'from-the-future'"):
        protocol.parse_event('{"event": "from-the-future"}')


def test_command_lines():
    assert protocol.command("stop") == '{"cmd": "stop"}'
    assert protocol.parse_request(protocol.command("stop")) == protocol.StopRequest()
    assert protocol.parse_command(protocol.command("stop")) == {"cmd": "stop"}
    assert protocol.parse_command("stop") is None
    with pytest.raises(ProtocolError, match="base_model is missing"):
        protocol.command("load")


def test_the_warning_event_does_not_hide_the_builtin():
    assert not hasattr(protocol, "Warning")
    assert protocol.EVENTS["warning"] is protocol.WarningEvent


def fake_serve(tmp_path: Path, *lines: str) -> list[dict]:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fake_worker.py"), "serve",
                           "--project", str(tmp_path)], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_the_fake_worker_speaks_only_the_protocol(tmp_path):
    """The GUI tests' stand-in parses commands and writes events through the dataclasses: each
    line it writes parses, and a bad command gets the error the real worker gives."""
    generate = protocol.GenerateRequest(prompt="p", steps=2, width=64, height=64, id="j",
                                        out_dir=str(tmp_path))
    events = fake_serve(tmp_path, '{"cmd": "load"}',
                        protocol.LoadRequest(base_model="m").to_json(),
                        '{"cmd": "generate", "prompt": "p", "width": 0}',
                        generate.to_json(), protocol.QuitRequest().to_json())
    parsed = [protocol.parse_event(json.dumps(e)) for e in events]
    assert [e.name for e in parsed] == ["hello", "error", "ready", "error", "gen_progress",
                                        "gen_progress", "image", "gen_done"]
    assert (parsed[1].field, parsed[1].message) == ("base_model", "load: base_model is missing")
    assert parsed[3].field == "width" and "between 32 and 2048" in parsed[3].message
