"""`python -m training …`: the worker the GUI starts, and the headless CLI (the same command).

    python -m training train PROJECT_DIR [--config FILE] [--set key=value ...] [--control-stdin]
    python -m training serve [--project DIR]          (generation worker; commands on stdin)
    python -m training generate --model M --prompt P [--lora FILE[:STRENGTH] ...] [--out DIR]
    python -m training check PROJECT_DIR [--json]     (dataset doctor, steps, memory, time)
    python -m training plan-memory PROJECT_DIR [--gpu-gb 8] [--json]  (predicted VRAM, fit)
    python -m training defaults > settings.toml
    python -m training demo [--out DIR]
    python -m training evaluate RUN_DIR [--seeds N] [--json]   (report card of a run's LoRAs)

Events go to stdout as JSON lines (studio/protocol/__init__.py); logs and the terminal progress bar go to
stderr. Exit codes: 0 finished or stopped on request, 1 training failed, 2 bad configuration or
dataset (nothing is written then), anything else a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import traceback
from pathlib import Path

# Never reach for the network during training, and set this before diffusers/transformers import
# (lora-formats.md §8.3): an uncached model fails at once with a clear message instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from studio import atomic, config, dataset, protocol  # noqa: E402
from studio.config import ConfigError, TrainConfig  # noqa: E402
from studio.runs.project import Project, RunDir  # noqa: E402
from training.events import EventSink  # noqa: E402

log = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a LoRA on a project folder")
    train.add_argument("project", type=Path, help="project folder (project.toml + dataset)")
    train.add_argument("--config", type=Path, help="TOML settings applied over project.toml")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set rank=32")
    train.add_argument("--run-dir", type=Path, help="create the run folder here (new or empty; "
                                                    "default: runs/<start time> in the project)")
    train.add_argument("--resume", nargs="?", const="latest", metavar="RUN_OR_RESUME_POINT",
                       help="continue a stopped run: its latest resume point, or the given run "
                            "folder or resume point (default: the newest in the project)")
    train.add_argument("--control-stdin", action="store_true",
                       help="GUI mode: a 'stop' command or stdin closing stops the run gracefully")
    train.add_argument("--json", action="store_true",
                       help="print JSON events even when stdout is a terminal")
    serve = sub.add_parser("serve", help="generation worker: JSON commands on stdin")
    serve.add_argument("--project", type=Path, default=Path.cwd(),
                       help="folder that relative model paths and outputs are relative to")
    gen = sub.add_parser("generate", help="generate images once (same code as the Generate tab)")
    gen.add_argument("--model", required=True, help="base model folder or Hub id")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative", default="")
    gen.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                     help="a LoRA file and its strength (default 1), repeatable")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--cfg", type=float, default=7.0)
    gen.add_argument("--size", default="512x512", help="WIDTHxHEIGHT in pixels")
    gen.add_argument("--sampler", default="Euler")
    gen.add_argument("--count", type=int, default=1)
    gen.add_argument("--out", type=Path, default=Path("generated"))
    check = sub.add_parser("check", help="check a project before training: dataset doctor, "
                                         "buckets, steps, memory and time estimates")
    check.add_argument("project", type=Path)
    check.add_argument("--config", type=Path, help="TOML settings applied over project.toml")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    mem = sub.add_parser("plan-memory", help="predict peak GPU memory (no GPU needed) and the "
                                             "fastest settings that fit a card")
    mem.add_argument("project", type=Path)
    mem.add_argument("--config", type=Path, help="TOML settings applied over project.toml")
    mem.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    mem.add_argument("--gpu-gb", type=float, help="the card's memory in GiB (default: this "
                                                  "machine's GPU, if any)")
    mem.add_argument("--no-fit", action="store_true", help="only the plan (and whether it fits "
                                                            "the card), not the fit search")
    mem.add_argument("--json", action="store_true", help="print the plan as JSON")
    sub.add_parser("defaults", help="print every setting with its help, as TOML")
    demo = sub.add_parser("demo", help="train the demo style LoRA on the bundled pocket model")
    demo.add_argument("--out", type=Path, help="where to create the demo project")
    ev = sub.add_parser("evaluate", help="report card of a run: style match, prompt fidelity, "
                                         "copy risk and validation loss per LoRA file")
    ev.add_argument("run_dir", type=Path, help="the run folder (PROJECT/runs/<id>)")
    ev.add_argument("--seeds", type=int, help="images per prompt (default 1)")
    ev.add_argument("--variants", type=int,
                    help="fidelity prompts per held-out caption, one word swapped (default 2)")
    ev.add_argument("--copy-prompts", type=int,
                    help="training captions rendered for the copy check (default 2)")
    ev.add_argument("--quick", action="store_true", default=None,
                    help="judge each LoRA file on its in-training samples (the run's sample "
                         "prompts and seed): only the base model, and files without samples, "
                         "are rendered")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the run's)")
    ev.add_argument("--cfg", type=float, help="CFG scale (default: the run's)")
    ev.add_argument("--timesteps", type=int, help="noise levels of the classifier (default 8)")
    ev.add_argument("--margin", type=float,
                    help="fidelity may fall this fraction below the base's (default 0.1)")
    ev.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ev.add_argument("--control-stdin", action="store_true",
                    help="GUI mode: a 'stop' command or stdin closing stops the evaluation")
    ev.add_argument("--json", action="store_true",
                    help="print JSON events even when stdout is a terminal")
    return parser


def resolve_config(project: Project, config_file: Path | None, overrides: list[str]) -> TrainConfig:
    cfg = project.load_config()
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError([config.Problem("--config", f"file not found: {config_file}")])
        cfg = config.load(config_file, cfg)
    return config.parse_overrides(overrides, cfg)


class LogFile(logging.FileHandler):
    """The run's log file. When a write fails (disk full, a removed drive) it says so once on
    stderr and stops writing, instead of logging's "--- Logging error ---" traceback per line
    (logging.Handler.handleError); the terminal and events.jsonl still get everything."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self.failed:
            self.failed = True
            sys.stderr.write(f"warning: the log file {self.baseFilename} can no longer be "
                             f"written ({sys.exc_info()[1]}); logging to the terminal only\n")


def setup_logging(run: RunDir | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run is not None:
        handlers.append(LogFile(run.log, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)


RECORDS = ("config.toml", "events.jsonl", "log.txt")  # what a run holds before it trains


def discard_run(run: RunDir, created: bool) -> None:
    """Take back a run folder a refused or failed start wrote, so "nothing written" holds: the
    folder if this start created it, else (an empty --run-dir) the records written into it.
    Never when it holds anything else (a LoRA, a resume point, samples)."""
    if any(p.is_file() and p.relative_to(run.path).as_posix() not in RECORDS
           for p in run.path.rglob("*")):
        return
    setup_logging(None)  # closes log.txt (Windows cannot delete an open file)
    if created:
        shutil.rmtree(run.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            run.path.parent.rmdir()  # runs/ too, when this was its only run
    else:
        for name in RECORDS:
            (run.path / name).unlink(missing_ok=True)


def check_run_dir(project: Project, cfg: TrainConfig, run_dir: Path) -> str | None:
    """Why `--run-dir` cannot hold a run (None if it can): a run writes config, logs and LoRAs
    there, so never into the dataset (only read, never changed) or over the project."""
    target, data = run_dir.resolve(), project.resolve(cfg.dataset_dir).resolve()
    if target == project.root.resolve():
        return f"{run_dir} is the project folder itself; give a new folder for the run"
    if target.is_relative_to(data):
        return (f"{run_dir} is inside the dataset folder {data}, which LoRA Studio never "
                f"writes to; give a folder outside it")
    if target.exists() and not target.is_dir():
        return f"{run_dir} is a file, not a folder"
    if target.is_dir() and any(target.iterdir()):
        return f"{run_dir} is not empty; give a new or empty folder"
    return None


def cmd_train(args: argparse.Namespace) -> int:
    from training.events import Control

    # Under `accelerate launch` every rank runs this; only rank 0 talks and writes files.
    main_rank = int(os.environ.get("RANK", "0")) == 0
    sink = EventSink(stdout_events=args.json or not sys.stdout.isatty(), enabled=main_rank)
    sink.emit(protocol.Hello(pid=os.getpid(), command="train"))
    setup_logging(None)
    project = Project(args.project.resolve())

    def fail(code: int, message: str, hint: str = "", field: str = "", fix=None) -> int:
        sink.emit(protocol.Error(message=message, hint=hint, field=field, fix=fix or {}))
        return code

    # Everything the user can get wrong is checked before anything is written.
    if not project.root.is_dir():
        return fail(2, f"Project folder not found: {project.root}",
                    "Give the folder that holds project.toml and the dataset.", "project")
    try:
        cfg = resolve_config(project, args.config, args.set)
    except ConfigError as exc:
        return fail(2, str(exc), "Fix the settings named above.", exc.problems[0].field)
    if problems := config.validate(cfg):
        err = ConfigError(problems)
        return fail(2, str(err), "Fix the settings named above.", problems[0].field)
    from studio import paths as path_rules
    from studio.errors import UserError

    try:  # Windows' MAX_PATH: refused now, not at the first LoRA file or resume point
        path_rules.check_run_paths(project.runs.resolve(), cfg.output_name)
    except UserError as exc:
        return fail(2, str(exc), exc.hint, exc.field)
    try:
        items = dataset.load(project.resolve(cfg.dataset_dir), cfg.exclude_images, cfg.repeats)
    except dataset.DatasetError as exc:
        first = next(f for f in exc.findings if f.fatal)
        return fail(2, str(exc), "Fix or remove the files named above; the dataset folder is "
                                 "never changed by LoRA Studio.", str(first.path))

    if args.run_dir and not args.resume and (why := check_run_dir(project, cfg, args.run_dir)):
        return fail(2, f"--run-dir: {why}.", "Leave --run-dir out to create the run in the "
                                             "project's runs/ folder.", "run_dir")
    point, notes = None, []  # the resume point, read back and checked once, here
    if args.resume:
        from training import resume

        try:
            path, notes = find_resume_point(project, args.resume)
            point = resume.open_point(path, cfg, resume.dataset_manifest(items))
        except resume.ResumeError as exc:
            return fail(2, str(exc), exc.hint, exc.field)
    # The worker alone creates the run folder (the GUI learns it from the status event below),
    # and only now: a run refused above leaves nothing behind.
    created = False
    if main_rank:
        run = RunDir(point.path.parent.parent) if point else \
            RunDir(args.run_dir.resolve()) if args.run_dir else None
        try:
            if run is None:
                run, created = project.new_run(), True
            elif not run.path.exists():
                run.path.mkdir(parents=True)
                created = True
            atomic.write_text(run.config, config.to_toml(cfg))
            sink.attach_file(run.events)
            setup_logging(run)
        except OSError as exc:  # a full or read-only disk: an error event, not a traceback
            if run is not None and not point:
                discard_run(run, created)
            return fail(1, *start_failure(exc, run.path if run else project.runs))
    else:
        run = RunDir(project.runs / f".rank{os.environ['RANK']}")  # never written to
    sink.emit(protocol.Status("loading_model", f"Run folder {run.path}", {"run_dir": str(run.path)}))
    for note in notes:
        log.warning("%s", note)
        sink.emit(protocol.WarningEvent(message=note, hint="Nothing to do: the run goes on from "
                                                          "the newest intact resume point."))
    control = Control(stdin_control=args.control_stdin)

    from studio.machine.diskspace import DiskFull
    from studio.errors import UserError
    from training.train import OutOfMemory, TrainingDiverged, train

    try:
        result = train(project, cfg, run, items, sink, control, point)
    except UserError as exc:  # the model, data, optimizer or resume point: fix and retry
        code = fail(2, str(exc), exc.hint, exc.field)
        if main_rank and not point:
            discard_run(run, created)  # exit 2 means nothing written (README)
        return code
    except DiskFull as exc:
        code = fail(1, exc.strerror, exc.hint)
        if main_rank and not point:
            discard_run(run, created)
        return code
    except OutOfMemory as exc:
        return fail(1, str(exc), exc.hint, next(iter(exc.fix)), exc.fix)
    except TrainingDiverged as exc:
        return fail(1, str(exc), exc.hint, "learning_rate")
    except KeyboardInterrupt:
        return fail(1, "Aborted without saving (Ctrl-C twice).", "Run again to start over.")
    except Exception as exc:  # noqa: BLE001 - every failure reaches the GUI as an error event
        log.error("training failed:\n%s", traceback.format_exc())
        from studio.protocol import crash_hints  # the one advice table (window and worker)

        return fail(1, f"Training failed: {type(exc).__name__}: {exc}",
                    crash_hints.for_exception(exc))
    sink.emit(protocol.Done(path=str(result.adapter), stopped=result.stopped, step=result.step,
                            files=[str(p) for p in result.files]))
    sink.close_file()
    return 0


def start_failure(exc: OSError, where: Path) -> tuple[str, str]:
    """(message, hint) for a run folder that could not be written."""
    from studio.machine.diskspace import DiskFull, free_bytes, is_disk_full

    if is_disk_full(exc) and not isinstance(exc, DiskFull):
        exc = DiskFull(where, None, free_bytes(where if where.exists() else where.parent))
    if isinstance(exc, DiskFull):
        return exc.strerror, exc.hint
    return (f"Could not create the run folder {where}: {exc.strerror or exc}.",
            "Check that the project folder is on a writable disk with free space.")


def find_resume_point(project: Project, spec: str) -> tuple[Path, list[str]]:
    """The resume point `--resume` continues, and warnings to show; a ResumeError says which
    run was looked at and why it cannot go on.

    `latest` looks at the project's newest run only: an older run is never picked silently (its
    settings would then "differ" for no reason the artist can see); `spec` may also be a run
    folder (its newest intact resume point) or one resume point folder. A finished run is never
    reopened: resuming would overwrite its LoRA."""
    from studio.runs import history as run_history
    from training import resume

    point = None
    if spec == "latest":
        runs = project.list_runs()
        if not runs:
            raise resume.ResumeError(f"Nothing to resume: {project.runs} holds no run.",
                                     "Start a new run (without --resume).")
        run, what = runs[-1], f"the newest run, {runs[-1].path.name},"
    else:
        path = Path(spec).resolve()
        if (path / "state.json").is_file():
            point, path = path, path.parent.parent
        run, what = RunDir(path), f"the run {path}"
    summary = run_history.summarize(run)
    if summary.status == "finished":
        raise resume.ResumeError(
            f"Nothing to resume: {what} finished (step {summary.step}); a finished run is "
            f"never reopened, so its LoRA stays as it is.",
            "That run finished; start a new run (without --resume), e.g. with more steps.")
    if point is not None:
        return point, []
    point, damaged = resume.newest_intact(run.path)
    notes = [f"The resume point {p.name} of run {run.path.name} is damaged and was skipped "
             f"({why})" for p, why in damaged]
    if point is None:
        why = "; ".join(notes) if notes else "it stopped before its first resume point was saved"
        older = [r for r in project.list_runs() if r != run and
                 run_history.summarize(r).resumable] if spec == "latest" else []
        hint = (f"To continue the older run {older[-1].path.name}, name it: --resume "
                f"{older[-1].path}" if older else "Start a new run (without --resume).")
        raise resume.ResumeError(f"Nothing to resume: {what} has no intact resume point "
                                 f"({why}).", hint)
    if notes:
        notes[-1] += f"; resuming from {point.name}, the newest intact one"
    return point, notes


def _generation_server(project: Path):
    import torch

    from training.serve import Server
    from training.train import cpu_threads

    torch.set_num_threads(cpu_threads(TrainConfig()))
    sink = EventSink(stdout_events=True)
    sink.emit(protocol.Hello(pid=os.getpid(), command="serve"))
    setup_logging(None)
    return Server(sink, project.resolve())


def lora_spec(spec: str) -> tuple[Path, float]:
    """`FILE` or `FILE:STRENGTH` (a Windows drive letter's colon is not a strength)."""
    head, sep, tail = spec.rpartition(":")
    try:
        return (Path(head), float(tail)) if sep else (Path(spec), 1.0)
    except ValueError:
        return Path(spec), 1.0


def cmd_serve(args: argparse.Namespace) -> int:
    _generation_server(args.project).run()
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    server = _generation_server(Path.cwd())
    width, _, height = args.size.lower().partition("x")
    adapters = [(str(path.resolve()), strength) for path, strength in map(lora_spec, args.lora)]
    try:
        # The request is built (and checked) before the model loads: a bad size fails at once.
        req = protocol.GenerateRequest(
            prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
            cfg_scale=args.cfg, width=int(width), height=int(height or width),
            sampler=args.sampler, count=args.count, adapters=adapters,
            out_dir=str(args.out.resolve()))
        server.load(protocol.LoadRequest(base_model=args.model))
        server.generate(req)
    except Exception as exc:  # noqa: BLE001 - one clear message for the terminal
        server.sink.emit(protocol.Error(message=str(exc), hint=getattr(exc, "hint", ""),
                                        field=str(getattr(exc, "field", "") or "")))
        return 2 if isinstance(exc, (ValueError, FileNotFoundError)) else 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from training import check

    project = Project(args.project.resolve())
    try:
        cfg = resolve_config(project, args.config, args.set)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if problems := config.validate(cfg):
        print(ConfigError(problems), file=sys.stderr)
        return 2
    from studio import paths as path_rules
    from studio.errors import UserError

    try:  # the same MAX_PATH rule `train` applies before it writes anything
        path_rules.check_run_paths(project.runs.resolve(), cfg.output_name)
    except UserError as exc:
        print(f"{exc}\n{exc.hint}", file=sys.stderr)
        return 2
    try:
        result = check.report(project, cfg)
    except dataset.DatasetError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(check.dumps(result) if args.json else check.to_text(result))
    return 0 if result["ok"] else 2


def cmd_plan_memory(args: argparse.Namespace) -> int:
    from training import memory_plan

    return memory_plan.cli(args.project, args.config, args.set, args.gpu_gb, args.json,
                           not args.no_fit)


def cmd_defaults(args: argparse.Namespace) -> int:
    sys.stdout.write(config.to_toml(TrainConfig()) + "\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from training.demo import create_demo_project

    project = create_demo_project(args.out)
    print(f"Demo project: {project.root}", file=sys.stderr)
    return cmd_train(build_parser().parse_args(["train", str(project.root)]))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import cli

    return cli(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "serve": cmd_serve, "generate": cmd_generate,
                "check": cmd_check, "plan-memory": cmd_plan_memory, "defaults": cmd_defaults,
                "demo": cmd_demo, "evaluate": cmd_evaluate}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
