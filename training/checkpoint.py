"""Training checkpoints that resume exactly: LoRA weights, optimizer, LR schedule, RNG states, data
position. Tensors in safetensors, the rest in JSON, so our own state never needs pickle.

A checkpoint is a folder written under a temporary name, fsynced, verified by reading it back and
only then renamed to `step-NNNNNN`; older ones are deleted only after that (issue 8). A folder
without `state.json` is never taken for a checkpoint, so a kill at any moment leaves only complete
ones visible.
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
from safetensors.torch import load_file, save_file

from studio import config
from studio.config import TrainConfig
from studio.dataset import Item
from studio.diskspace import DiskFull, free_bytes, is_disk_full
from studio.errors import UserError

FORMAT = 1
# Settings that may change between a stop and a resume without changing what is trained.
RESUME_SAFE = {"output_name", "save_every_n_steps", "checkpoint_every_minutes", "keep_checkpoints",
               "sample_every_n_epochs", "sample_every_n_steps", "sample_prompts", "sample_steps",
               "sample_cfg_scale", "save_dtype", "export_diffusers", "author", "description",
               "cpu_threads", "validation_images"}


class ResumeError(UserError):
    field = "resume"


@dataclass
class Position:
    """Where the loop is: everything besides weights that an exact resume needs."""
    step: int
    epoch: int
    queue: list[list[int]]  # the current epoch's remaining batches
    gen_state: torch.Tensor  # the CPU torch.Generator (noise, timesteps, posterior samples)
    rng_state: tuple  # the Python random.Random (flips, caption augmentation)


def config_fingerprint(cfg: TrainConfig) -> dict:
    return {k: v for k, v in config.to_dict(cfg).items() if k not in RESUME_SAFE}


def dataset_manifest(items: list[Item]) -> str:
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
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(folder: Path, lora: dict[str, torch.Tensor], optimizer, schedule, pos: Position,
         cfg: TrainConfig, manifest: str, keep: int) -> Path:
    """Write checkpoint `folder/step-NNNNNN` atomically; keep the newest `keep`."""
    final = folder / f"step-{pos.step:06d}"
    tmp = folder / f".step-{pos.step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write(tmp, lora, optimizer, schedule, pos, cfg, manifest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half checkpoint behind
        if is_disk_full(exc):
            raise DiskFull(folder, None, free_bytes(folder)) from exc
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write(tmp: Path, lora, optimizer, schedule, pos: Position, cfg: TrainConfig,
           manifest: str) -> None:
    save_file({k: v.detach().float().cpu().contiguous() for k, v in lora.items()},
              str(tmp / "lora.safetensors"))
    opt_tensors, opt_meta = _split_state(optimizer.state_dict())
    save_file(opt_tensors or {"_empty": torch.zeros(0)}, str(tmp / "optimizer.safetensors"))
    save_file({"generator": pos.gen_state}, str(tmp / "rng.safetensors"))
    version, internal, gauss = pos.rng_state
    state = dict(format=FORMAT, step=pos.step, epoch=pos.epoch, queue=pos.queue,
                 python_rng=[version, list(internal), gauss], optimizer=opt_meta,
                 schedule=schedule.state_dict(), config=config_fingerprint(cfg),
                 dataset=manifest)
    # state.json last: its presence marks the folder complete.
    (tmp / "state.json").write_text(json.dumps(state))
    _fsync_tree(tmp)
    verify(tmp)  # read back before it replaces anything


def verify(ckpt: Path) -> dict:
    """The checkpoint's state if every part reads back, else a ResumeError."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
        for name in ("lora.safetensors", "optimizer.safetensors", "rng.safetensors"):
            load_file(str(ckpt / name))
    except (OSError, ValueError, KeyError) as exc:
        raise ResumeError(f"The checkpoint {ckpt} is incomplete or damaged ({exc}).",
                          "Resume from an earlier checkpoint or start a new run.") from None
    if state.get("format") != FORMAT:
        raise ResumeError(f"The checkpoint {ckpt} was written by another version.",
                          "Start a new run.")
    return state


def latest(runs: list[Path]) -> Path | None:
    """The newest complete checkpoint in these run folders (newest run first)."""
    for run in sorted(runs, reverse=True):
        for ckpt in sorted((run / "checkpoints").glob("step-*"), reverse=True):
            if (ckpt / "state.json").is_file():
                try:
                    verify(ckpt)
                    return ckpt
                except ResumeError:
                    continue
    return None


def check_compatible(state: dict, cfg: TrainConfig, manifest: str) -> None:
    """Refuse (and say why) a resume whose settings or data would train something else."""
    now = config_fingerprint(cfg)
    changed = sorted(k for k in set(now) | set(state["config"])
                     if now.get(k) != state["config"].get(k))
    if changed:
        details = ", ".join(f"{k}: {state['config'].get(k)!r} -> {now.get(k)!r}"
                            for k in changed[:6])
        raise ResumeError(f"The settings changed since this run was stopped ({details}), so "
                          f"resuming would not continue the same training.",
                          "Change the settings back, or start a new run with the new ones.")
    if state["dataset"] != manifest:
        raise ResumeError("The dataset changed since this run was stopped (images or captions "
                          "were added, removed or edited).",
                          "Undo the changes to resume, or start a new run.")


def restore(ckpt: Path, state: dict, optimizer, schedule) -> tuple[dict[str, torch.Tensor],
                                                                    Position]:
    """Load optimizer and schedule state in place; return the LoRA tensors and the position."""
    optimizer.load_state_dict(_join_state(
        {k: v for k, v in load_file(str(ckpt / "optimizer.safetensors")).items()
         if k != "_empty"}, state["optimizer"]))
    schedule.load_state_dict(state["schedule"])
    version, internal, gauss = state["python_rng"]
    pos = Position(step=state["step"], epoch=state["epoch"], queue=state["queue"],
                   gen_state=load_file(str(ckpt / "rng.safetensors"))["generator"],
                   rng_state=(version, tuple(internal), gauss))
    return load_file(str(ckpt / "lora.safetensors")), pos


def rng_position(gen: torch.Generator, rng: random.Random, step: int, epoch: int,
                 queue: list[list[int]]) -> Position:
    return Position(step, epoch, [list(b) for b in queue], gen.get_state(), rng.getstate())

