"""Resume points and atomic writes on Windows (issue 13, item 14), simulated on any OS: there
`os.open` cannot open a folder and `os.fsync` (`_commit`) refuses a read-only handle. The real
save path runs under those rules and its resume point reads back whole."""

from __future__ import annotations

import errno
import os
import random
import sys
import types
from pathlib import Path

import pytest
import torch

from studio import atomic
from studio.config import TrainConfig
from training import resume

fcntl = pytest.importorskip("fcntl")  # the simulation reads a handle's mode the POSIX way


class _NtOs(types.ModuleType):
    """The os module as seen on Windows: os.name "nt", everything else the real one."""
    name = "nt"

    def __getattr__(self, attr):
        return getattr(os, attr)


def windows_rules(patch) -> list[str]:
    """os.name "nt", folders unopenable by os.open, fsync only on writable handles."""
    broken: list[str] = []
    real_open, real_fsync = os.open, os.fsync

    def nt_open(path, flags, *args, **kwargs):
        # shutil.rmtree's fd-based walk is POSIX-only (shutil._use_fd_functions): not ours.
        if os.path.isdir(path) and sys._getframe(1).f_globals.get("__name__") != "shutil":
            broken.append(f"os.open({path})")
            raise PermissionError(errno.EACCES, "Access is denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def nt_fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            broken.append(f"fsync(read-only fd {fd})")
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real_fsync(fd)

    # os.name "nt" as our modules see it (pathlib itself would refuse to make a PosixPath).
    for module in (atomic, resume):
        patch.setattr(module, "os", _NtOs("os"))
    patch.setattr(os, "open", nt_open)
    patch.setattr(os, "fsync", nt_fsync)
    return broken


def test_resume_points_and_atomic_files_are_written_under_windows_rules(tmp_path, monkeypatch):
    weight = torch.nn.Parameter(torch.ones(4, 4))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    weight.grad = torch.full_like(weight, 0.5)
    optimizer.step()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    pos = resume.rng_position(torch.Generator().manual_seed(1), random.Random(2), step=3,
                              epoch=1, queue=[[0, 1]])
    cfg = TrainConfig()
    with monkeypatch.context() as patched:
        broken = windows_rules(patched)
        try:
            point = resume.save(tmp_path / "resume", {"lora.weight": weight.detach()},
                                optimizer, schedule, pos, cfg, "manifest", keep=2)
            atomic.write_text(tmp_path / "loras" / "a.json", "{}")
            failure = None
        except Exception as exc:  # noqa: BLE001 - reported below, with os.name restored
            failure = repr(exc)
    assert failure is None and broken == [], (failure, broken)  # no folder opened, no
    # read-only handle fsynced
    assert resume.verify(point)["step"] == 3 and (tmp_path / "loras" / "a.json").read_text() == "{}"
    assert [p.name for p in Path(tmp_path / "resume").iterdir()] == ["step-000003"]
