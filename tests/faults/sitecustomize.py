"""Fault injection for worker subprocesses (tests/test_disk_full.py): with LORA_STUDIO_TEST_ENOSPC
set to one or more path prefixes (os.pathsep-separated), every file opened for writing under them
behaves as on a full disk: it opens, and its writes fail with ENOSPC (what ext4/NTFS do when the
blocks run out). Put this folder first on PYTHONPATH; Python imports sitecustomize at start-up,
before logging captures `open`."""

import builtins
import errno
import io
import os

_PREFIXES = tuple(p for p in os.environ.get("LORA_STUDIO_TEST_ENOSPC", "").split(os.pathsep) if p)


class _Full(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def _full(path, mode, encoding=None, errors=None, **_):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))  # the file appears, empty
    raw = io.BufferedWriter(_Full())
    return raw if "b" in mode else io.TextIOWrapper(raw, encoding=encoding or "utf-8",
                                                    errors=errors, line_buffering=False)


if _PREFIXES:
    _real_open = builtins.open

    def _open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and \
                os.path.abspath(os.fspath(file)).startswith(_PREFIXES):
            return _full(file, mode, kwargs.get("encoding"), kwargs.get("errors"))
        return _real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = _open
