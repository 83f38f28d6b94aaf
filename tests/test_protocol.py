"""The GUI <-> worker wire format."""

from __future__ import annotations

import json

from studio import protocol


def test_every_event_round_trips():
    events = [protocol.Hello(pid=3, command="train"), protocol.Status("caching", "x", {"done": 1}),
              protocol.Progress(step=2, total=9, epoch=1, loss=0.5, lr=1e-4, eta_s=3.5),
              protocol.LoraSaved(step=2, path="/a.safetensors"),
              protocol.Done(path="/b", stopped=True, step=4, files=["/b"]),
              protocol.Error(message="bad", hint="fix", field="rank")]
    for event in events:
        line = event.to_json()
        assert "\n" not in line and json.loads(line)["event"] == event.name
        assert protocol.parse_event(line) == event


def test_unknown_lines_are_log_text_not_errors():
    assert protocol.parse_event("Loading weights 50%") is None
    assert protocol.parse_event('{"event": "from-the-future"}') is None
    assert protocol.parse_event("[1, 2]") is None
    # A newer worker may add keys: they are ignored.
    assert protocol.parse_event('{"event": "done", "path": "p", "extra": 1}') == \
        protocol.Done(path="p")


def test_commands():
    assert protocol.parse_command(protocol.command("stop")) == {"cmd": "stop"}
    assert protocol.parse_command("stop") is None
