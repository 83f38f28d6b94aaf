"""Helpers for the GUI tests (imported by name: tests/ui is on sys.path under pytest)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE_WORKER = ROOT / "tests" / "fake_worker.py"


def digests(folder: Path) -> dict[str, str]:
    """Each image file's content hash (captions excluded): the artist's images never change."""
    from studio.dataset import IMAGE_EXTENSIONS

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.suffix.lower() in IMAGE_EXTENSIONS}


class FakeWorkerFactory:
    """Makes WorkerProcesses that run tests/fake_worker.py; set `mode`, `steps`, `delay`,
    `grace_ms` before starting. `record` receives every line the GUI wrote to the worker."""

    def __init__(self, record: Path):
        self.record = record
        self.mode, self.steps, self.delay, self.grace_ms = "ok", 20, 0.01, 3000
        self.serve_mode, self.serve_delay = "ok", 0.005  # the generation worker (serve)
        # the memory planner (plan-memory)
        self.plan_delay, self.plan_weights_gib, self.plan_sampling_gib = 0.2, 2.0, 2.5
        self.created = []
        self.kinds: list[str] = []  # each worker's command (train, serve, plan-memory…), in order
        self.args: list[list[str]] = []  # each worker's whole command line after the program

    def __call__(self):
        from ui.worker import WorkerProcess

        worker = WorkerProcess(
            [sys.executable, "-u", str(FAKE_WORKER)], grace_ms=self.grace_ms,
            env={"FAKE_WORKER_MODE": self.mode, "FAKE_WORKER_STEPS": str(self.steps),
                 "FAKE_WORKER_DELAY": str(self.delay), "FAKE_WORKER_RECORD": str(self.record),
                 "FAKE_SERVE_MODE": self.serve_mode, "FAKE_SERVE_DELAY": str(self.serve_delay),
                 "FAKE_PLAN_DELAY": str(self.plan_delay),
                 "FAKE_PLAN_WEIGHTS_GIB": str(self.plan_weights_gib),
                 "FAKE_PLAN_SAMPLING_GIB": str(self.plan_sampling_gib)})
        self.created.append(worker)
        start = worker.start
        worker.start = lambda args: (self.kinds.append(args[0]), self.args.append(list(args)),
                                     start(args))[2]
        return worker

    def commands(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def sent(self, name: str) -> list[dict]:
        """The commands called `name` the GUI sent (to any worker), oldest first."""
        import json

        found = [json.loads(line) for line in self.commands() if line.startswith("{")]
        return [c for c in found if c.get("cmd") == name]


def write_lora(path: Path, metadata: dict[str, str]) -> Path:
    """A tiny but valid .safetensors LoRA (one 1x1 tensor) with this `__metadata__`, written by
    hand: GUI tests never import torch."""
    import json
    import struct

    header = {"__metadata__": metadata,
              "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight":
                  {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + struct.pack("<f", 0.5))
    return path


def make_run(project_root: Path, name: str, output: str = "inkwash-style",
             trigger: str = "inkwash", checkpoints=(100, 200), final_step: int = 300,
             status: str | None = None, total: int = 0) -> Path:
    """A run folder like the engine writes: config.toml, the final LoRA and its step
    checkpoints (each with kohya/modelspec metadata); with `status` ("finished", "stopped",
    "failed"), an events.jsonl that ended that way (stopped at `final_step` of `total`)."""
    from studio import config

    run = project_root / "runs" / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(config.to_toml(config.TrainConfig(output_name=output,
                                                                       trigger_word=trigger)))
    meta = {"modelspec.trigger_phrase": trigger} if trigger else {}
    write_lora(run / f"{output}.safetensors", {**meta, "ss_steps": str(final_step)})
    for step in checkpoints:
        write_lora(run / "checkpoints" / f"{output}-step{step:06d}.safetensors",
                   {**meta, "ss_steps": str(step)})
    if status is not None:
        from studio import protocol

        total = total or final_step
        events = [protocol.Progress(step=final_step, total=total, epoch=1, loss=0.1, lr=1e-4)]
        if status == "failed":
            events.append(protocol.Error(message="The GPU ran out of memory.", hint="Retry."))
        else:
            events.append(protocol.Done(path=str(run / f"{output}.safetensors"),
                                        stopped=status == "stopped", step=final_step))
        (run / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    return run


def open_and_wait(qtbot, window, folder: Path, model: Path | None = None):
    """Open a folder of images in the window and wait until the dataset has been examined."""
    assert window.open_path(folder)
    if model is not None:
        window.session.update(base_model=str(model))
        window.train_tab.settings.model.set_value(str(model), window.session.project.root)
        window.train_tab.settings._validate(window.session.config, [])
    qtbot.waitUntil(lambda: window.session.report is not None, timeout=20000)
    return window.session.project
