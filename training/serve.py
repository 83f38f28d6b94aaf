"""`python -m training serve`: the long-lived generation worker behind the Generate tab.

Commands arrive as JSON lines on stdin (studio/protocol.py); a reader thread queues them, except
`cancel`, which takes effect at once (between denoising steps). stdin closing means the GUI is
gone: the worker exits. One bad command gets an error event; the worker keeps serving.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path

from studio import grid, protocol
from studio.protocol import GenDone, GenerateRequest, GenProgress, ImageReady, Ready
from training.events import EventSink
from training.generate import Cancelled, Generator, save_png

log = logging.getLogger("training")


class Server:
    def __init__(self, sink: EventSink, project_root: Path):
        self.sink = sink
        self.project_root = project_root
        self.generator: Generator | None = None
        self.cancel = threading.Event()
        self.commands: queue.Queue[dict] = queue.Queue()
        self.base_loads = 0

    # --- stdin -----------------------------------------------------------------------------
    def read_stdin(self) -> None:
        for line in sys.stdin:
            cmd = protocol.parse_command(line)
            if cmd is None:
                log.warning("ignored a line that is not a command: %r", line[:200])
            elif cmd["cmd"] == "cancel":
                self.cancel.set()
            elif cmd["cmd"] == "quit":
                break
            else:
                self.commands.put(cmd)
        # quit or stdin closed: act now, even mid-load or mid-image (a preview worker holds no
        # state worth saving, and its PNGs are written atomically), so the GUI never waits.
        self.cancel.set()
        os._exit(0)

    def run(self) -> None:
        """Serve until stdin says quit or closes (read_stdin then ends the process)."""
        threading.Thread(target=self.read_stdin, name="stdin-commands", daemon=True).start()
        while True:
            cmd = self.commands.get()
            name = cmd.get("cmd")
            handler = {"load": self.load, "generate": self.generate, "grid": self.grid,
                       "merge": self.merge}.get(name)
            try:
                if handler is None:
                    raise ValueError(f"unknown command {name!r}")
                handler(cmd)
            except Exception as exc:  # noqa: BLE001 - report and keep serving
                log.exception("command %s failed", name)
                self.sink.emit(protocol.Error(message=f"{name}: {exc}", field=str(name),
                                              hint=getattr(exc, "hint", "") or
                                              "See the worker log for details."))

    # --- commands --------------------------------------------------------------------------
    def load(self, cmd: dict) -> None:
        base = cmd["base_model"]
        if self.generator is None or self.generator.base_model != base:
            self.generator = None  # free the old pipeline before loading the next
            self.generator = Generator.load(base, Path(cmd.get("project") or self.project_root))
            self.base_loads += 1
        self.sink.emit(Ready(base_model=base, seconds=round(self.generator.load_seconds, 3),
                             base_loads=self.base_loads))

    def _need_generator(self) -> Generator:
        if self.generator is None:
            raise ValueError("no base model loaded: send a load command first")
        return self.generator

    def generate(self, cmd: dict) -> None:
        gen = self._need_generator()
        req = GenerateRequest.from_command(cmd)
        out_dir = Path(req.out_dir or self.project_root / "generated")
        self.cancel.clear()
        started, paths = time.monotonic(), []

        def on_step(index: int, step: int, total: int) -> None:
            self.sink.emit(GenProgress(id=req.id, image=index, count=req.count, step=step,
                                       total=total))
        try:
            for index, seed, image, text in gen.generate(req, on_step, self.cancel):
                path = save_png(image, text, out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}"
                                                      f"-{seed}-{index}.png")
                paths.append(str(path))
                self.sink.emit(ImageReady(id=req.id, index=index, seed=seed, path=str(path),
                                          parameters=text))
        except Cancelled:
            pass
        self.sink.emit(GenDone(id=req.id, paths=paths, cancelled=self.cancel.is_set(),
                               seconds=round(time.monotonic() - started, 3)))

    def merge(self, cmd: dict) -> None:
        """Bake LoRAs into a full model: {adapters: [[path, strength]], out, format, precision}."""
        from training.merge import merge

        gen = self._need_generator()
        started = time.monotonic()
        self.sink.emit(protocol.Status("saving", f"Merging into {cmd['out']}"))
        out = merge(gen, [(Path(p), float(w)) for p, w in cmd["adapters"]], Path(cmd["out"]),
                    cmd.get("format", "safetensors"), cmd.get("precision", "fp16"))
        self.sink.emit(GenDone(id=cmd.get("id", ""), paths=[str(out)],
                               seconds=round(time.monotonic() - started, 3)))

    def grid(self, cmd: dict) -> None:
        """Rows: LoRA files (checkpoints/epochs); columns: strengths; one labelled PNG."""
        gen = self._need_generator()
        checkpoints = [Path(p) for p in cmd.pop("checkpoints")]
        strengths = [float(s) for s in cmd.pop("strengths", grid.DEFAULT_STRENGTHS)]
        out = Path(cmd.pop("out"))
        req = GenerateRequest.from_command({**cmd, "count": 1, "adapters": None})
        self.cancel.clear()
        started, cells, total = time.monotonic(), [], len(checkpoints) * len(strengths)
        try:
            for r, ckpt in enumerate(checkpoints):
                row = []
                for c, strength in enumerate(strengths):
                    gen.set_adapters([(ckpt, strength)])
                    index = r * len(strengths) + c

                    def on_step(_, step, steps, index=index):
                        self.sink.emit(GenProgress(id=req.id, image=index, count=total,
                                                   step=step, total=steps))
                    row.append(next(gen.generate(req, on_step, self.cancel))[2])
                cells.append(row)
        except Cancelled:
            self.sink.emit(GenDone(id=req.id, cancelled=True,
                                   seconds=round(time.monotonic() - started, 3)))
            return
        image = grid.compose(cells, [p.stem for p in checkpoints],
                             [f"strength {s:g}" for s in strengths],
                             title=f"{req.prompt}  (seed {req.seed}, {req.steps} steps)")
        text = f"{req.prompt}\nLoRA grid: " + ", ".join(p.name for p in checkpoints)
        save_png(image, text, out)
        self.sink.emit(ImageReady(id=req.id, index=0, seed=req.seed, path=str(out),
                                  parameters=text))
        self.sink.emit(GenDone(id=req.id, paths=[str(out)],
                               seconds=round(time.monotonic() - started, 3)))
