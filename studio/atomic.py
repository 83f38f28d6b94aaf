"""Atomic file writes: a reader sees the old file or the complete new one, never a partial file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from studio.machine.diskspace import DiskFull, free_bytes, is_disk_full

# safetensors and mkstemp create files 0600; LoRAs must be readable by other accounts and tools
# (ComfyUI running as another user, a shared models folder): lora-formats.md §4.
FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success fsync it and rename it into place.

    The temporary file lives in the same folder so that the final `os.replace` is a rename on one
    file system (atomic on POSIX and Windows). On any error the temporary file is removed and the
    previous file, if any, is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if not isinstance(exc, DiskFull) and is_disk_full(exc):
            raise DiskFull(path.parent, None, free_bytes(path.parent)) from exc
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh


def write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def fsync_dir(folder: Path) -> None:
    """Make renames and new files in `folder` durable (a no-op on Windows, which cannot open a
    folder for fsync and does not need it)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
