"""`python -m training serve`: the long-lived generation worker behind the Generate tab.

Commands arrive as JSON lines on stdin and are parsed into the requests of studio/protocol/__init__.py; a
reader thread queues them, except `cancel`, which takes effect at once (between denoising steps),
and a malformed line, which is refused at once, even during a generation.
stdin closing means the GUI is gone: the worker exits. A malformed or failing command gets an
error event that names the field; the worker keeps serving.
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
from studio.protocol import (CancelRequest, GenDone, GenerateRequest, GenProgress, GridRequest,
                             ImageReady, LoadRequest, MergeRequest, ProtocolError, QuitRequest,
                             Ready, Request)
from training.events import EventSink
from training.generate import Cancelled, Generator, save_png

log = logging.getLogger("training")
BAD_COMMAND_HINT = ("The worker did not understand the command; the window and the worker may be "
                    "from different versions. See the worker log for details.")
MEMORY_ENV = "LORA_STUDIO_GENERATE_MEMORY_MB"  # cap for one image (default: what is free now)
# Activation memory per image, measured on the tiny model on the CPU (peak RSS at 512² and
# 1024², one step): the UNet needs ~23x (batch x latent pixels x its first channel count x
# element size), the VAE decoder ~5.4x (image pixels x its second channel count x element size),
# the level whose upsampler runs at full size. Rounded up: an estimate that errs on refusing.
UNET_FACTOR, VAE_FACTOR = 32, 8


class TooLarge(ValueError):
    """A size whose memory estimate exceeds what the machine has; `field` names the setting."""

    field = "width"
    hint = "Choose a smaller size (the model's native size is safest), then upscale the image."


def image_memory(pipe, width: int, height: int, cfg_scale: float) -> int:
    """Bytes one image of this size needs beyond the loaded weights (a rough upper estimate)."""
    batch = 2 if cfg_scale > 1 else 1  # classifier-free guidance runs both halves at once
    unet, vae = pipe.unet, pipe.vae
    latent = (width // 8) * (height // 8) * batch * unet.config.block_out_channels[0]
    decoded = width * height * vae.config.block_out_channels[min(1, len(
        vae.config.block_out_channels) - 1)]
    return int(latent * unet.dtype.itemsize * UNET_FACTOR +
               decoded * vae.dtype.itemsize * VAE_FACTOR)


def free_memory(device) -> int:
    """Bytes free for activations on `device` now: the GPU's free memory plus what PyTorch keeps
    cached for reuse; system memory otherwise. MEMORY_ENV caps it."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        import psutil  # accelerate's dependency

        free = psutil.virtual_memory().available
    cap = os.environ.get(MEMORY_ENV)
    return min(free, int(float(cap) * 2**20)) if cap else free


def check_memory(gen: Generator, width: int, height: int, cfg_scale: float) -> None:
    """Refuse at once a size that would not fit, instead of swapping or failing minutes later
    (issue 13: width 100000 ran for minutes and ignored cancel)."""
    from studio.units import human_bytes

    need = image_memory(gen.pipe, width, height, cfg_scale)
    free = free_memory(gen.pipe.device)
    if need > free:
        raise TooLarge(f"{width}x{height} needs about {human_bytes(need)} of memory for one "
                       f"image, more than the {human_bytes(free)} free on this machine "
                       f"({gen.pipe.device.type})")


def unique_png(folder: Path, stem: str) -> Path:
    """A new file `stem.png` (or `stem-2.png`, `-3` …) in `folder`, reserved by exclusive
    creation: "with / without" renders one seed twice within a second, and the second image
    used to replace the first on disk and in the history (issue 14)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = folder / (f"{stem}.png" if n == 1 else f"{stem}-{n}.png")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path  # save_png then replaces the empty placeholder atomically
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for {stem}.png in {folder}")


class Server:
    def __init__(self, sink: EventSink, project_root: Path):
        self.sink = sink
        self.project_root = project_root
        self.generator: Generator | None = None
        self.cancel = threading.Event()
        # Requests in arrival order. A line that fails to parse is answered by the reader
        # thread at once, not after the job running now (that could take minutes).
        self.commands: queue.Queue[Request] = queue.Queue()
        self.base_loads = 0

    # --- stdin -----------------------------------------------------------------------------
    def read_stdin(self) -> None:
        # Bytes, decoded leniently: one line of invalid UTF-8 must not end the reader (the
        # worker would then never read another command).
        for raw in sys.stdin.buffer:
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                request = protocol.parse_request(line)
            except ProtocolError as exc:
                self.refuse(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. RecursionError: [[[[… 100 000 deep
                self.refuse(ProtocolError(f"not a command the worker can read "
                                          f"({type(exc).__name__}): {line.strip()[:80]!r}"))
                continue
            if isinstance(request, CancelRequest):
                self.cancel.set()
            elif isinstance(request, QuitRequest):
                break
            else:
                self.commands.put(request)
        # quit or stdin closed: act now, even mid-load or mid-image (a preview worker holds no
        # state worth saving, and its PNGs are written atomically), so the GUI never waits.
        self.cancel.set()
        os._exit(0)

    def run(self) -> None:
        """Serve until stdin says quit or closes (read_stdin then ends the process)."""
        threading.Thread(target=self.read_stdin, name="stdin-commands", daemon=True).start()
        while True:
            self.handle(self.commands.get())

    def refuse(self, problem: ProtocolError) -> None:
        """A line that is not a valid command: its error event now, from the reader thread
        (EventSink.emit holds a lock), while a generation goes on."""
        log.warning("refused a command: %s", problem)
        self.sink.emit(protocol.Error(message=str(problem), field=problem.field,
                                      hint=BAD_COMMAND_HINT))

    def handle(self, request: Request) -> None:
        """Run one request; any failure becomes an error event (the worker keeps serving)."""
        handler = {LoadRequest: self.load, GenerateRequest: self.generate,
                   GridRequest: self.grid, MergeRequest: self.merge}.get(type(request))
        try:
            if handler is None:
                raise ValueError("not a command of the generation worker")
            handler(request)
        except Exception as exc:  # noqa: BLE001 - report and keep serving
            if isinstance(exc, TooLarge):
                log.warning("refused %s: %s", request.cmd, exc)
            else:
                log.exception("command %s failed", request.cmd)
            self.sink.emit(protocol.Error(message=f"{request.cmd}: {exc}",
                                          id=getattr(request, "id", ""),
                                          field=str(getattr(exc, "field", "") or request.cmd),
                                          hint=getattr(exc, "hint", "") or
                                          "See the worker log for details."))

    # --- commands --------------------------------------------------------------------------
    def load(self, req: LoadRequest) -> None:
        if self.generator is None or self.generator.base_model != req.base_model:
            self.generator = None  # free the old pipeline before loading the next
            self.generator = Generator.load(req.base_model,
                                            Path(req.project or self.project_root))
            self.base_loads += 1
        self.sink.emit(Ready(base_model=req.base_model,
                             seconds=round(self.generator.load_seconds, 3),
                             base_loads=self.base_loads))

    def _need_generator(self) -> Generator:
        if self.generator is None:
            raise ValueError("no base model loaded: send a load command first")
        return self.generator

    def generate(self, req: GenerateRequest) -> None:
        gen = self._need_generator()
        check_memory(gen, req.width, req.height, req.cfg_scale)
        out_dir = Path(req.out_dir or self.project_root / "generated")
        self.cancel.clear()
        started, paths = time.monotonic(), []

        def on_step(index: int, step: int, total: int) -> None:
            self.sink.emit(GenProgress(id=req.id, image=index, count=req.count, step=step,
                                       total=total))
        try:
            for index, seed, image, text in gen.generate(req, on_step, self.cancel):
                path = save_png(image, text, unique_png(
                    out_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}-{index}"))
                paths.append(str(path))
                self.sink.emit(ImageReady(id=req.id, index=index, seed=seed, path=str(path),
                                          parameters=text))
        except Cancelled:
            pass
        self.sink.emit(GenDone(id=req.id, paths=paths, cancelled=self.cancel.is_set(),
                               seconds=round(time.monotonic() - started, 3)))

    def merge(self, req: MergeRequest) -> None:
        """Bake LoRAs into a full model (a .safetensors file or a diffusers folder)."""
        from training.merge import merge

        gen = self._need_generator()
        started = time.monotonic()
        self.sink.emit(protocol.Status(protocol.Phase.SAVING, f"Merging into {req.out}"))
        out = merge(gen, [(Path(p), w) for p, w in req.adapters], Path(req.out), req.format,
                    req.precision)
        self.sink.emit(GenDone(id=req.id, paths=[str(out)],
                               seconds=round(time.monotonic() - started, 3)))

    def grid(self, request: GridRequest) -> None:
        """Rows: LoRA files (checkpoints/epochs); columns: strengths; one labelled PNG."""
        gen = self._need_generator()
        check_memory(gen, request.width, request.height, request.cfg_scale)
        checkpoints = [Path(p) for p in request.checkpoints]
        strengths, out = request.strengths, Path(request.out)
        req = request.as_request(GenerateRequest, count=1, adapters=None)  # each cell
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
