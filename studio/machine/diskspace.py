"""Free-space checks before big writes, and a message that names the disk when one is full."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from studio.units import human_bytes

MARGIN = 64 * 1024 * 1024  # leave room for logs and the OS


class DiskFull(OSError):
    """`needed` is what the write itself takes (the safety margin is said apart, never added in);
    `resumable` says whether the run has a resume point to continue from."""

    def __init__(self, folder: Path, needed: int | None, free: int, resumable: bool = False):
        self.folder, self.needed, self.free = folder, needed, free
        wanted = (f"{human_bytes(needed)} needed plus {human_bytes(MARGIN)} kept free for logs "
                  "and the system, ") if needed else ""
        super().__init__(errno.ENOSPC, f"Not enough space on the disk {mount_point(folder)} to "
                                       f"write into {folder}: {wanted}{human_bytes(free)} free.")
        self.hint = ("Free some space on that disk (or move the project), then "
                     + ("resume the run." if resumable else "start the run again."))


def mount_point(folder: Path) -> Path:
    path = Path(folder).resolve()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def is_disk_full(exc: BaseException) -> bool:
    # safetensors' Rust writer reports ENOSPC as text ("No space left on device (os error 28)").
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or \
        "No space left on device" in str(exc)


def free_bytes(folder: Path) -> int:
    existing = Path(folder)
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def ensure_free(folder: Path, needed: int, resumable: bool = False) -> None:
    """Raise DiskFull before writing `needed` bytes into `folder` if they can't fit with MARGIN."""
    free = free_bytes(folder)
    if free < needed + MARGIN:
        raise DiskFull(Path(folder), needed, free, resumable)
