"""Resume points that continue a run exactly: LoRA weights, optimizer, LR schedule, RNG states, data
position. Tensors in safetensors, the rest in JSON, so our own state never needs pickle.

A resume point is a folder (`runs/<id>/resume/step-NNNNNN`) written under a temporary name,
fsynced, verified by reading it back and only then renamed into place; older ones are deleted only
after that (issue 8). A folder without `state.json` is never taken for a resume point, so a kill at
any moment leaves only complete ones visible. (A "LoRA file" saved during training is something
else: a `.safetensors` in `loras/` to compare stages; see training/train.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from studio import atomic, config
from studio.config import TrainConfig
from studio.machine.diskspace import DiskFull, ensure_free, free_bytes, is_disk_full
from studio.errors import UserError
from studio.runs.project import RunDir

FORMAT = 1
# Settings that may change between a stop and a resume without changing what is trained.
# (The names as of schema 1 are listed too, so that an older resume point's stored settings compare
# equal: they were left out of its fingerprint under their old names.)
RESUME_SAFE = {"output_name", "save_every_n_steps", "save_every_n_epochs",
               "resume_point_every_minutes",
               "keep_resume_points", "sample_every_n_epochs", "sample_every_n_steps",
               "sample_prompts", "sample_steps", "sample_cfg_scale", "save_dtype",
               "export_diffusers", "author", "description", "cpu_threads",
               "schema", "checkpoint_every_minutes", "keep_checkpoints",
               "evaluate_after_training", "quick_report_card"}
# Not safe, though they look like bookkeeping: validation_images picks the held-out images (the
# data split, so what trains); the rest above only change what is written or how often.


class ResumeError(UserError):
    field = "resume"


@dataclass(frozen=True)
class ResumePoint:
    """A verified resume point: its folder and its state.json."""
    path: Path
    state: dict


@dataclass
class Position:
    """Where the loop is: everything besides weights that an exact resume needs."""
    step: int
    epoch: int
    queue: list[list[int]]  # the current epoch's remaining batches
    gen_state: torch.Tensor  # the CPU torch.Generator (noise, timesteps, posterior samples)
    rng_state: tuple  # the Python random.Random (flips, caption augmentation)

    def to_json(self) -> dict:
        """Plain data, to gather every rank's position on rank 0 (training/train.py)."""
        version, internal, gauss = self.rng_state
        return dict(step=self.step, epoch=self.epoch, queue=self.queue,
                    gen_state=self.gen_state.tolist(), python_rng=[version, list(internal), gauss])

    @classmethod
    def from_json(cls, data: dict) -> "Position":
        version, internal, gauss = data["python_rng"]
        return cls(data["step"], data["epoch"], data["queue"],
                   torch.tensor(data["gen_state"], dtype=torch.uint8),
                   (version, tuple(internal), gauss))


def config_fingerprint(cfg: TrainConfig) -> dict:
    return {k: v for k, v in config.to_dict(cfg).items() if k not in RESUME_SAFE}


def dataset_manifest(items: list) -> str:
    """A digest of the dataset items (name, image hash, caption, repeats): a resume point is only
    valid for the same data."""
    digest = hashlib.sha256()
    for it in items:
        digest.update(f"{it.name}|{it.sha256}|{it.caption}|{it.repeats}\n".encode())
    return digest.hexdigest()


def _split_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict as (tensors for safetensors, everything else for JSON)."""
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _join_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, key = flat.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb+") as fh:  # Windows' fsync (_commit) refuses a read-only handle
            os.fsync(fh.fileno())
    atomic.fsync_dir(folder)  # guarded: Windows cannot open a folder for fsync


def lora_state(unet, text_encoders: tuple = ()) -> dict[str, torch.Tensor]:
    """The LoRA weights of the (unwrapped) UNet and text encoders, text ones prefixed."""
    lora = dict(get_peft_model_state_dict(unet))
    for i, te in enumerate(text_encoders):
        lora.update({f"text_encoder{i}.{k}": v for k, v in get_peft_model_state_dict(te).items()})
    return lora


def load_lora_state(lora: dict[str, torch.Tensor], unet, text_encoders: tuple = ()) -> None:
    set_peft_model_state_dict(unet, {k: v for k, v in lora.items() if not k.startswith("text_")})
    for i, te in enumerate(text_encoders):
        prefix = f"text_encoder{i}."
        set_peft_model_state_dict(te, {k[len(prefix):]: v for k, v in lora.items()
                                       if k.startswith(prefix)})


def save_point(run: RunDir, unet, text_encoders: tuple, optimizer, schedule,
               pos: Position | list[Position], cfg: TrainConfig, manifest: str) -> Path:
    """Everything needed to continue exactly from `pos` (one per training process, rank 0
    first), as `run.resume/step-NNNNNN`."""
    lora = lora_state(unet, text_encoders)
    lora_bytes = sum(t.numel() for t in lora.values()) * 4
    # weights + 2 Adam moments + slack; "resume" is good advice only if an older point exists
    ensure_free(run.path, lora_bytes * 4, resumable=bool(run.resume_points()))
    return save(run.resume, lora, optimizer, schedule, pos, cfg, manifest, cfg.keep_resume_points)


def restore(point: ResumePoint, unet, text_encoders: tuple, optimizer, schedule, rank: int = 0,
            world: int = 1) -> Position:
    """Load the LoRA weights, optimizer and schedule state in place; the loop's position for
    training process `rank` of `world`."""
    lora, pos = read(point.path, point.state, optimizer, schedule, rank, world)
    load_lora_state(lora, unet, text_encoders)
    return pos


def save(folder: Path, lora: dict[str, torch.Tensor], optimizer, schedule,
         pos: Position | list[Position], cfg: TrainConfig, manifest: str, keep: int) -> Path:
    """Write resume point `folder/step-NNNNNN` atomically; keep the newest `keep`."""
    ranks = pos if isinstance(pos, list) else [pos]
    pos = ranks[0]
    final = folder / f"step-{pos.step:06d}"
    tmp = folder / f".step-{pos.step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write(tmp, lora, optimizer, schedule, ranks, cfg, manifest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half resume point behind
        if is_disk_full(exc):
            raise DiskFull(folder, None, free_bytes(folder),
                           resumable=any(folder.glob("step-*"))) from exc
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write(tmp: Path, lora, optimizer, schedule, ranks: list[Position], cfg: TrainConfig,
           manifest: str) -> None:
    save_file({k: v.detach().float().cpu().contiguous() for k, v in lora.items()},
              str(tmp / "lora.safetensors"))
    opt_tensors, opt_meta = _split_state(optimizer.state_dict())
    save_file(opt_tensors or {"_empty": torch.zeros(0)}, str(tmp / "optimizer.safetensors"))
    # Every training process's own generator and batch queue: restoring rank 0's on every rank
    # made all ranks see the same batches and noise after a resume (issue 17 item 10).
    save_file({"generator" if r == 0 else f"generator.rank{r}": p.gen_state
               for r, p in enumerate(ranks)}, str(tmp / "rng.safetensors"))
    pos = ranks[0]
    version, internal, gauss = pos.rng_state
    state = dict(format=FORMAT, step=pos.step, epoch=pos.epoch, queue=pos.queue,
                 python_rng=[version, list(internal), gauss], optimizer=opt_meta,
                 schedule=schedule.state_dict(), config=config_fingerprint(cfg),
                 dataset=manifest, world=len(ranks),
                 ranks=[{k: v for k, v in p.to_json().items() if k != "gen_state"}
                        for p in ranks[1:]])
    # state.json last: its presence marks the folder complete.
    (tmp / "state.json").write_text(json.dumps(state))
    _fsync_tree(tmp)
    verify(tmp)  # read back before it replaces anything


def verify(ckpt: Path) -> dict:
    """The resume point's state if every part reads back, else a ResumeError."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
        for name in ("lora.safetensors", "optimizer.safetensors", "rng.safetensors"):
            load_file(str(ckpt / name))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        # SafetensorError (a truncated file: "invalid header length") is no OSError/ValueError.
        raise ResumeError(f"The resume point {ckpt} is incomplete or damaged ({exc}).",
                          "Resume from an earlier resume point or start a new run.") from None
    if state.get("format") != FORMAT:
        raise ResumeError(f"The resume point {ckpt} was written by another version.",
                          "Start a new run.")
    return state


def latest(runs: list[Path]) -> Path | None:
    """The newest complete resume point in these run folders (newest run first)."""
    for run in sorted(runs, reverse=True):
        point, _ = newest_intact(run)
        if point is not None:
            return point
    return None


def newest_intact(run: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The run's newest resume point that reads back, and the newer ones that did not (path,
    why): a damaged newest point falls back to the one before, and the caller says so."""
    damaged = []
    for ckpt in reversed(RunDir(run).resume_points()):
        try:
            verify(ckpt)
            return ckpt, damaged
        except ResumeError as exc:
            damaged.append((ckpt, str(exc)))
    return None, damaged


def open_point(path: Path, cfg: TrainConfig, manifest: str) -> ResumePoint:
    """The resume point at `path`, read back and checked against these settings and data; a
    ResumeError says what is wrong."""
    state = verify(path)
    try:
        check_compatible(state, cfg, manifest)
    except ResumeError as exc:  # name the run: "which run, and why" (issue 13)
        raise ResumeError(f"Run {path.parent.parent.name} (resume point {path.name}): {exc}",
                          exc.hint) from None
    return ResumePoint(path, state)


def check_compatible(state: dict, cfg: TrainConfig, manifest: str) -> None:
    """Refuse (and say why) a resume whose settings or data would train something else."""
    now = config_fingerprint(cfg)
    then = {k: v for k, v in state["config"].items() if k not in RESUME_SAFE}
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if changed:
        details = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ResumeError(f"The settings changed since this run was stopped ({details}), so "
                          f"resuming would not continue the same training.",
                          "Change the settings back, or start a new run with the new ones.")
    if state["dataset"] != manifest:
        raise ResumeError("The dataset changed since this run was stopped (images or captions "
                          "were added, removed or edited).",
                          "Undo the changes to resume, or start a new run.")


def read(ckpt: Path, state: dict, optimizer, schedule, rank: int = 0, world: int = 1
         ) -> tuple[dict[str, torch.Tensor], Position]:
    """Load optimizer and schedule state in place; return the LoRA tensors and the position of
    training process `rank` of `world`."""
    written_by = state.get("world", 1)
    if written_by != world:  # each process's queue is its share of the epoch for that many
        raise ResumeError(f"This run was stopped while training on {written_by} process(es) "
                          f"(GPUs) and is resumed on {world}, so the batches would not continue "
                          f"where they stopped.", f"Resume with {written_by} process(es), or "
                          f"start a new run.")
    optimizer.load_state_dict(_join_state(
        {k: v for k, v in load_file(str(ckpt / "optimizer.safetensors")).items()
         if k != "_empty"}, state["optimizer"]))
    schedule.load_state_dict(state["schedule"])
    generators = load_file(str(ckpt / "rng.safetensors"))
    if rank == 0:
        version, internal, gauss = state["python_rng"]
        pos = Position(step=state["step"], epoch=state["epoch"], queue=state["queue"],
                       gen_state=generators["generator"],
                       rng_state=(version, tuple(internal), gauss))
    else:
        pos = Position.from_json(dict(state["ranks"][rank - 1],
                                      gen_state=generators[f"generator.rank{rank}"].tolist()))
    return load_file(str(ckpt / "lora.safetensors")), pos


def rng_position(gen: torch.Generator, rng: random.Random, step: int, epoch: int,
                 queue: list[list[int]]) -> Position:
    return Position(step, epoch, [list(b) for b in queue], gen.get_state(), rng.getstate())

