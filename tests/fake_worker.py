"""A stand-in for `python -m training` that plays scripted protocol events (for GUI tests).

Same command line as the real worker (`train PROJECT --control-stdin [--run-dir DIR] [--set k=v]`);
behaviour from environment variables so a test can pick it per WorkerProcess:

    FAKE_WORKER_MODE    ok (default) | error | oom | crash | hang | noisy | warn | drift
                        (drift: one progress line with a renamed field, as an older worker
                        would write it)
    FAKE_WORKER_STEPS   progress steps (default 20)
    FAKE_WORKER_DELAY   seconds between steps (default 0.02)
    FAKE_WORKER_RECORD  file that gets every stdin line received, and "EOF" when stdin closes

It starts in milliseconds (no torch), honours the `stop` command like the real worker (saves and
exits 0 with `done.stopped = true`), and in `hang` mode ignores it so the kill backstop is needed.
Every event it writes is built from the studio/protocol/__init__.py dataclasses and every command it reads
is parsed into them, like the real worker, so renaming a protocol field breaks the GUI tests.

`serve --project DIR` plays the generation worker (training/serve.py): `load` → `ready`;
`generate` → `gen_progress` per step, a PNG with an A1111 `parameters` chunk per image (its colour
depends on the seed and the LoRA strengths) → `image`, then `gen_done`; `grid` → one labelled
PNG; `merge` → a file or folder at `out`; `cancel` interrupts between steps; `quit` or stdin
closing ends it. More variables:

    FAKE_SERVE_MODE     ok (default) | crash (dies in the first generate) | badload (load fails)
    FAKE_SERVE_DELAY    seconds per denoising step (default 0.01)

With `save_every_n_steps` set in the project's project.toml, `train` also writes a step LoRA
file (`loras/`, with `ss_epoch`) at each "end of an epoch", as the engine does.
`evaluate RUN_DIR --control-stdin` plays `python -m training evaluate` (training/evaluate.py):
a status with the cost, a PNG per evaluation image with progress (FAKE_WORKER_DELAY apart),
then report_card.json built from studio/runs/report_card.py's dataclasses and rule, for the run's
LoRA files as studio.runs.loras lists them (style better and fidelity lower with each later
file, so the later ones lose fidelity); `stop` or stdin closing stops it without a card.

    FAKE_EVAL_MODE      ok (default) | error (refused: no held-out images, exit 2)

`plan-memory PROJECT ...` plays the memory planner: see tests/fake_planner.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from studio import protocol, step_plan  # noqa: E402 (the line above puts the repo on the path)
from studio.config import TrainConfig  # noqa: E402
from studio.protocol import (Done, Error, GenDone, GenProgress, Hello, ImageReady,  # noqa: E402
                             LoraSaved, Phase, Progress, Ready, Sample, Status, Validation,
                             WarningEvent)

stop = threading.Event()
record_file: list[Path] = []  # the run's events.jsonl, once the run folder is known


def emit(event: protocol.Event) -> None:
    line = event.to_json()
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    for path in record_file:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def write_samples(folder: Path, step: int) -> list[str]:
    """Two small PNGs (a flat colour that changes with the step), written with Qt-free zlib."""
    import struct
    import zlib

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(2):
        size = 160
        colour = bytes(((step * 37 + i * 90) % 256, (step * 11) % 256, 160))
        raw = b"".join(b"\x00" + colour * size for _ in range(size))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + \
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) \
            + chunk(b"IEND", b"")
        path = folder / f"step{step:06d}-{i}.png"
        path.write_bytes(png)
        out.append(str(path))
    return out


def read_stdin(record: str | None) -> None:
    for line in sys.stdin:
        if record:
            with open(record, "a", encoding="utf-8") as fh:
                fh.write(line)
        try:
            if isinstance(protocol.parse_request(line), protocol.StopRequest):
                stop.set()
        except protocol.ProtocolError as exc:  # the real worker would not understand it either
            print(f"fake worker: refused a command: {exc}", file=sys.stderr, flush=True)
    if record:
        with open(record, "a", encoding="utf-8") as fh:
            fh.write("EOF\n")
    stop.set()


def fake_image(width: int, height: int, seed: int, adapters):
    """A picture that differs by seed and by LoRA strength (the LoRA "warms" the colours)."""
    from PIL import Image, ImageDraw

    weight = sum(float(w) for _, w in adapters or [])
    image = Image.new("RGB", (width, height), ((seed * 53) % 200 + 30, 90, 150))
    draw = ImageDraw.Draw(image)
    r = min(width, height) // 3
    cx, cy = width // 2 + (seed * 7) % (width // 4 + 1) - width // 8, height // 2
    colour = (int(min(255, 120 + 100 * weight)), 180, int(max(0, 220 - 120 * weight)))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    return image


def write_lora_header(path: Path, metadata: dict[str, str]) -> Path:
    """A header-only safetensors file with this `__metadata__` (what the catalog reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"__metadata__": metadata}).encode()
    path.write_bytes(len(meta).to_bytes(8, "little") + meta)
    return path


def save_png(image, text: str, path: Path) -> Path:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info)
    return path


def serve(project: Path) -> int:
    import queue

    from studio import grid, infotext

    mode = os.environ.get("FAKE_SERVE_MODE", "ok")
    delay = float(os.environ.get("FAKE_SERVE_DELAY", "0.01"))
    record = os.environ.get("FAKE_WORKER_RECORD")
    commands: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def reader() -> None:
        for line in sys.stdin:
            if record:
                with open(record, "a", encoding="utf-8") as fh:
                    fh.write(line)
            if not line.strip():
                continue
            try:  # the same parsing as training/serve.py: a bad command is queued as its error
                cmd = protocol.parse_request(line)
            except protocol.ProtocolError as exc:
                commands.put(exc)
                continue
            if isinstance(cmd, protocol.CancelRequest):
                cancel.set()
            else:
                commands.put(cmd)
        if record:
            with open(record, "a", encoding="utf-8") as fh:
                fh.write("EOF\n")
        commands.put(protocol.QuitRequest())

    def render(req: protocol.ImageSettings, index: int, count: int, seed: int, adapters):
        for step in range(1, req.steps + 1):
            time.sleep(delay)
            emit(GenProgress(id=req.id, image=index, count=count, step=step, total=req.steps))
            if cancel.is_set():
                return None
        return fake_image(req.width, req.height, seed, adapters)

    threading.Thread(target=reader, daemon=True).start()
    emit(Hello(pid=os.getpid(), command="serve"))
    loaded, loads = "", 0
    while True:
        cmd = commands.get()
        if isinstance(cmd, protocol.ProtocolError):
            emit(Error(message=str(cmd), field=cmd.field, hint="(fake worker) bad command"))
            continue
        name = cmd.cmd
        if name == "quit":
            return 0
        if isinstance(cmd, protocol.LoadRequest):
            if mode == "badload":
                emit(Error(message=f"load: Base model not found: {cmd.base_model}",
                           hint="Check the path in the Base model setting.", field="load"))
                continue
            if cmd.base_model != loaded:
                loaded, loads = cmd.base_model, loads + 1
            emit(Ready(base_model=loaded, seconds=0.01, base_loads=loads))
            continue
        if not loaded:
            emit(Error(message=f"{name}: no base model loaded", field=name,
                       id=getattr(cmd, "id", "")))
            continue
        cancel.clear()
        started, req_id = time.monotonic(), getattr(cmd, "id", "")
        if isinstance(cmd, protocol.GenerateRequest):
            if mode == "crash":
                print("RuntimeError: CUDA error: an illegal memory access", file=sys.stderr,
                      flush=True)
                os._exit(134)
            out_dir = Path(cmd.out_dir or project / "generated")
            paths = []
            for index in range(cmd.count):
                seed = cmd.seed + index
                image = render(cmd, index, cmd.count, seed, cmd.adapters)
                if image is None:
                    break
                params = infotext.Parameters(
                    prompt=cmd.prompt, negative_prompt=cmd.negative_prompt, steps=cmd.steps,
                    sampler=cmd.sampler, cfg_scale=cmd.cfg_scale, seed=seed, width=image.width,
                    height=image.height, model=Path(loaded).name,
                    loras=tuple((Path(p).stem, w) for p, w in cmd.adapters or [] if w != 0))
                text = infotext.format(params)
                path = save_png(image, text, out_dir / f"fake-{req_id}-{seed}-{index}.png")
                paths.append(str(path))
                emit(ImageReady(id=req_id, index=index, seed=seed, path=str(path),
                                parameters=text))
            emit(GenDone(id=req_id, paths=paths, cancelled=cancel.is_set(),
                         seconds=round(time.monotonic() - started, 3)))
        elif isinstance(cmd, protocol.GridRequest):
            rows, strengths = cmd.checkpoints, cmd.strengths
            cells = []
            for r, ckpt in enumerate(rows):
                cells.append([])
                for c, strength in enumerate(strengths):
                    image = render(cmd, r * len(strengths) + c, len(rows) * len(strengths),
                                   cmd.seed, [[ckpt, strength * (1 + r)]])
                    if image is None:
                        break
                    cells[-1].append(image)
                if cancel.is_set():
                    break
            if cancel.is_set():
                emit(GenDone(id=req_id, paths=[], cancelled=True, seconds=0.0))
                continue
            image = grid.compose(cells, [Path(p).stem for p in rows],
                                 [f"strength {s:g}" for s in strengths],
                                 title=f"{cmd.prompt}  (seed {cmd.seed}, {cmd.steps} steps)")
            text = f"{cmd.prompt}\nLoRA grid: " + ", ".join(Path(p).name for p in rows)
            save_png(image, text, Path(cmd.out))
            emit(ImageReady(id=req_id, index=0, seed=cmd.seed, path=cmd.out, parameters=text))
            emit(GenDone(id=req_id, paths=[cmd.out], cancelled=False, seconds=0.1))
        elif isinstance(cmd, protocol.MergeRequest):
            emit(Status(Phase.SAVING, f"Merging into {cmd.out}"))
            out = Path(cmd.out)
            if cmd.format == "diffusers":
                (out / "unet").mkdir(parents=True, exist_ok=True)
                (out / "model_index.json").write_text(cmd.to_json())
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                header = json.dumps({"__metadata__": {"merged": cmd.to_json()}}).encode()
                out.write_bytes(len(header).to_bytes(8, "little") + header)
            emit(GenDone(id=req_id, paths=[str(out)], cancelled=False, seconds=0.01))
        else:  # as training/serve.py answers a command that is not its own
            emit(Error(message=f"{name}: not a command of the generation worker", field=name,
                       id=getattr(cmd, "id", "")))


def run_settings(project: Path) -> str:
    """The run's config.toml: the project's settings as the run used them (the worker's rule),
    under the fake's output name."""
    import dataclasses

    from studio import config

    try:
        cfg = config.load(project / "project.toml")
    except (OSError, ValueError, config.ConfigError):
        cfg = config.TrainConfig()
    return config.to_toml(dataclasses.replace(cfg, output_name="fake-style"))


def evaluate(run: Path) -> int:
    from studio.runs import loras as lora_catalog
    from studio.runs import report_card as rc
    from studio.runs.project import RunDir

    delay = float(os.environ.get("FAKE_WORKER_DELAY", "0.02"))
    emit(Hello(pid=os.getpid(), command="evaluate", run_dir=str(run)))
    found = lora_catalog.run_loras(RunDir(run))
    if os.environ.get("FAKE_EVAL_MODE", "ok") == "error" or found is None:
        emit(Error(message="This run held out no validation images, so there is nothing to "
                           "judge its style against.", field="validation_images",
                   hint="Set Validation images to 2 or more and train again."))
        return 2
    files = [f.path for f in found.checkpoints_oldest_first()]
    prompts, seeds = ["zxq, a fox", "zxq, a heron"], [1000, 1001]
    total = (1 + len(files)) * len(prompts) * len(seeds)
    emit(Status(Phase.EVALUATING, f"Report card: {len(files)} LoRA file(s) and the base model",
                {"rows": 1 + len(files), "images": total}))
    val_by_step, _ = rc.validation_losses(RunDir(run).events)
    rows, done = [], 0
    for n, path in enumerate([None, *files]):
        meta = lora_catalog.metadata(path) if path else {}
        label = path.stem if path else rc.BASE_LABEL
        step = int(meta["ss_steps"]) if "ss_steps" in meta else None
        epoch = int(meta["ss_epoch"]) if "ss_epoch" in meta else None
        images = []
        for k, prompt in enumerate(prompts):
            for seed in seeds:
                if stop.is_set():
                    emit(Done(path="", stopped=True))
                    return 0
                time.sleep(delay)
                image = fake_image(64, 64, seed + 7 * k, [[str(path), 0.4 * n]] if path else [])
                out = save_png(image, prompt, run / rc.IMAGES_DIR / label / f"{k:02d}-s{seed}.png")
                images.append(out.relative_to(run).as_posix())
                done += 1
                emit(Progress(step=done, total=total, epoch=epoch or 0,
                              eta_s=(total - done) * delay))  # as training/evaluate._tick
        fidelity = 0.9 if n <= 2 else max(0.0, 0.9 - 0.25 * (n - 2))
        rows.append(rc.Row(
            label=label, file=path.relative_to(run).as_posix() if path else None, epoch=epoch,
            step=step, style=1.0 if n == 0 else round(1.0 - 0.15 * n, 3), fidelity=fidelity,
            fidelity_vs_base=fidelity / 0.9, copy_ssim=0.3 + 0.05 * n, copy_latent=1.0,
            val_loss=val_by_step.get(step), images=images))
    card = rc.ReportCard(base_model="fake", rows=rows, recommendation=rc.recommend(rows),
                         settings={"prompts": prompts, "seeds": seeds, "chance": 0.25})
    path = rc.save(card, run)
    emit(Status(Phase.EVALUATING, card.recommendation.reason,
                {"recommended_epoch": card.recommendation.epoch}))
    emit(Done(path=str(path), files=[str(path)]))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["plan-memory"]:
        from fake_planner import plan_memory  # tests/, beside this script

        return plan_memory()
    if sys.argv[1:2] == ["evaluate"]:
        if "--control-stdin" in sys.argv:
            threading.Thread(target=read_stdin, args=(os.environ.get("FAKE_WORKER_RECORD"),),
                             daemon=True).start()
        return evaluate(Path(sys.argv[2]))
    if sys.argv[1:2] == ["serve"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("command")
        parser.add_argument("--project", type=Path, default=Path.cwd())
        return serve(parser.parse_args().project)
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("project", type=Path)
    parser.add_argument("--control-stdin", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--resume", type=Path)
    args = parser.parse_args()
    mode = os.environ.get("FAKE_WORKER_MODE", "ok")
    steps = int(os.environ.get("FAKE_WORKER_STEPS", "20"))
    delay = float(os.environ.get("FAKE_WORKER_DELAY", "0.02"))
    if args.control_stdin:
        threading.Thread(target=read_stdin, args=(os.environ.get("FAKE_WORKER_RECORD"),),
                         daemon=True).start()
    run = args.resume or args.run_dir or args.project / "runs" / "fake"
    emit(Hello(pid=os.getpid(), command="train"))

    if mode == "error":
        emit(Error(message="resolution: must be a multiple of 8, not 500",
                   hint="Fix the settings named above.", field="resolution"))
        return 2
    if mode == "oom":
        emit(Error(message="The GPU ran out of memory at step 3.",
                   hint="Use a batch size of 1 and turn on gradient checkpointing.",
                   field="batch_size", fix={"batch_size": 1, "gradient_checkpointing": True}))
        return 1
    run.mkdir(parents=True, exist_ok=True)  # like the worker: only once the run is accepted
    (run / "config.toml").write_text(run_settings(args.project))
    record_file.append(run / "events.jsonl")
    emit(Status(Phase.LOADING_MODEL, ("Resuming " if args.resume else "") + f"Run folder {run}",
                {"run_dir": str(run)}))
    emit(Status(Phase.CACHING, "Encoded 3/6", {"done": 3, "total": 6}))
    emit(Status(Phase.TRAINING, "Training 15,360 LoRA parameters",
                {"trainable_params": 15360, "unet_params": 990000, "steps": steps}))
    print("[transformers] `CLIPImageProcessor` requires torchvision (not installed); falling "
          "back to `CLIPImageProcessorPil` for backward compatibility.", file=sys.stderr)
    print("Loading pipeline components...: 100%|##########| 5/5 [00:00<00:00, 39.37it/s]",
          file=sys.stderr)  # what the real worker's libraries print
    print("INFO training on the CPU with 1 CPU thread(s)", file=sys.stderr, flush=True)
    if mode == "warn":
        emit(WarningEvent(message="Training is much slower than expected.",
                          hint="Close other programs that use the GPU."))
    if mode == "noisy":
        print("a stray print on stdout", flush=True)
        line = Progress(step=1, total=steps, epoch=1, loss=0.5, lr=1e-3, eta_s=3.0).to_json()
        sys.stdout.write(line[:17])  # a JSON line split across two reads
        sys.stdout.flush()
        time.sleep(0.2)
        sys.stdout.write(line[17:] + "\n")
        sys.stdout.flush()
    if mode == "drift":  # hand-written on purpose: what the dataclasses can no longer produce
        print(json.dumps({"event": "progress", "stp": 1, "total": steps, "epoch": 1, "loss": 0.5,
                          "lr": 1e-3, "eta_s": None}), flush=True)
    samples = run / "samples"
    import tomllib

    try:  # the engine saves step LoRA files when asked (studio/step_plan.py)
        settings = tomllib.loads((args.project / "project.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = {}
    save_loras = bool(settings.get("save_every_n_steps"))
    epoch = 1
    step = 0
    for step in range(1, steps + 1):
        if stop.is_set() and mode != "hang":
            step -= 1
            break
        loss = 1.0 / (1 + 0.1 * step) + 0.05 * ((step * 7919) % 13) / 13
        emit(Progress(step=step, total=steps, epoch=1 + step // 10, loss=loss, lr=1e-3,
                      eta_s=(steps - step) * delay if step > 1 else None))
        time.sleep(delay)
        if step % max(1, steps // 3) == 0:  # "end of an epoch": validation loss and samples
            epoch = step // max(1, steps // 3)
            emit(Validation(step=step, epoch=epoch, loss=loss * 1.1))
            emit(Sample(step=step, epoch=epoch, paths=write_samples(samples, step),
                        prompts=["zxq, a fox", "a fox"]))
            # LoRA files: every step when save_every_n_steps is set (the report card's tests),
            # and per epoch when the real worker's step plan says so (default: auto).
            per_epoch = step_plan.after_step(step, steps, epoch, True, False, TrainConfig(), 0.0,
                                             total_epochs=-(-steps // max(1, steps // 3)))
            if (save_loras and step < steps) or per_epoch.save_lora:
                path = write_lora_header(run / "loras" / f"fake-style-step{step:06d}.safetensors",
                                  {"modelspec.trigger_phrase": "inkwash", "ss_steps": str(step),
                                   "ss_epoch": str(epoch)})
                emit(LoraSaved(step=step, path=str(path)))
        if mode == "crash" and step == steps // 2:
            sys.stderr.write("Traceback (most recent call last):\n  File \"train.py\", line 1\n"
                             "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
                             "2.00 GiB\n")
            sys.stderr.flush()
            os._exit(134)  # like an abort: no done or error event
        if mode == "hang" and step == 3:
            while True:  # a worker stuck in a library call: never reads stdin again
                time.sleep(0.1)
    emit(Status(Phase.SAVING, "Saving the LoRA"))
    if stop.is_set() and step < steps:  # a resume point, as the engine writes on stop
        point = run / "resume" / f"step-{step:06d}"
        point.mkdir(parents=True, exist_ok=True)
        (point / "state.json").write_text(json.dumps({"step": step}))
    adapter = write_lora_header(run / "fake-style.safetensors",
                         {"modelspec.trigger_phrase": "inkwash", "ss_steps": str(step),
                          **({"ss_epoch": str(epoch + 1)} if save_loras else {})})
    emit(Done(path=str(adapter), stopped=stop.is_set() and step < steps, step=step,
              files=[str(adapter)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
