"""Names that become paths: resolved inside their root, checked for what Windows/macOS refuse."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

# Windows refuses these as a file's stem whatever the extension ("CON.png", "com1.txt"), and the
# superscript digits count too (reference datasets-and-reliability.md §5.3; Fizgig#70 died at the
# first save on Windows because of a bad name).
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
             *(f"{dev}{n}" for dev in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3")}
_FORBIDDEN = set('<>:"/\\|?*')
MAX_NAME_BYTES = 255  # ext4, NTFS (in UTF-16 units) and APFS all stop near here


class UnsafePath(ValueError):
    """A name that would resolve outside its root (traversal, absolute path, symlink escape)."""


def name_problem(name: str) -> str | None:
    """Why `name` (one path component) is unsafe on Windows or macOS, in words; None if fine."""
    if name in ("", ".", ".."):
        return "is not a usable file name"
    control = sorted({f"U+{ord(c):04X}" for c in name if ord(c) < 32 or ord(c) == 127})
    if control:
        return f"contains control characters ({', '.join(control)}), e.g. a pasted line break"
    bad = sorted({c for c in name if c in _FORBIDDEN})
    if bad:
        return "contains " + " ".join(bad) + ", not allowed in file names on Windows"
    if name[-1] in ". ":
        return "ends with a dot or a space, which Windows silently drops"
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _RESERVED:
        return f"starts with '{stem}', a reserved device name on Windows (whatever the extension)"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def nfc(name: str) -> str:
    """macOS may hand names back decomposed (NFD); compare and store names as NFC."""
    return unicodedata.normalize("NFC", name)


def collision_key(name: str) -> str:
    """Two names with the same key are the same file on Windows and (by default) macOS."""
    return nfc(name).casefold()


def safe_join(root: str | os.PathLike, name: str | os.PathLike) -> Path:
    """`root/name` resolved, refusing anything that leaves `root`: '..', absolute or drive paths
    (in POSIX or Windows spelling) and symlinks pointing out (issue 8, Security: "every path built
    from a name is resolved inside its root")."""
    text = os.fspath(name)
    if not text or "\x00" in text:
        raise UnsafePath(f"{text!r} is not a usable name")
    # Check both spellings: a name from a metadata.jsonl or a zip written on Windows uses '\'.
    win, posix = PureWindowsPath(text), PurePosixPath(text)
    if posix.is_absolute() or win.is_absolute() or win.drive or win.root:
        raise UnsafePath(f"{text!r} is an absolute path; only names inside the folder are allowed")
    if ".." in win.parts or ".." in posix.parts:
        raise UnsafePath(f"{text!r} climbs out of the folder with '..'")
    base = Path(root).resolve()
    target = (base / text.replace("\\", "/")).resolve()
    # resolve() follows symlinks, so a link inside root that points elsewhere is caught here.
    if not target.is_relative_to(base):
        raise UnsafePath(f"{text!r} leads outside {base} (through a symbolic link)")
    return target


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symlink followed, stays inside `root` (also resolved)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # symlink loops
        return False



# --- path length: Windows' MAX_PATH ----------------------------------------------------------------
# Win32 refuses paths of 260 UTF-16 units or more (MAX_PATH counts the final NUL) unless both the
# LongPathsEnabled registry value is 1 and the program is long-path aware, which python.exe is
# since 3.6 (docs.python.org/3/using/windows.html "Removing the MAX_PATH Limitation").
WINDOWS_MAX_PATH = 259
PATH_LIMIT_ENV = "LORA_STUDIO_MAX_PATH"  # a lower limit to honour (a network share; the tests)
# The longest paths a run writes below runs/, longest first: a step LoRA file while
# studio/atomic.py writes it (mkstemp's 8 random characters, 7-digit steps), and a resume point's
# optimizer state inside its temporary folder (training/resume.py). The run id is the start time,
# with "-99" when several runs start in one second (studio/runs/project.py).
RUN_ID = "20260101-000000-99"
LONGEST_IN_RUN = ("loras/.{name}-step0000000.safetensors.abcdefgh.tmp",
                  "resume/.step-0000000.tmp/optimizer.safetensors")


def windows_long_paths() -> bool:
    """Whether Windows lets long-path-aware programs use paths past MAX_PATH (a registry value)."""
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                            r"SYSTEM\CurrentControlSet\Control\FileSystem") as key:
            return winreg.QueryValueEx(key, "LongPathsEnabled")[0] == 1
    except (ImportError, OSError):
        return False


def path_limit(platform: str | None = None, long_paths: bool | None = None) -> int | None:
    """The most characters a path may have here; None where the system sets no practical limit."""
    import sys

    if (env := os.environ.get(PATH_LIMIT_ENV, "").strip()).isdigit():
        return int(env)
    if (platform or sys.platform) != "win32":
        return None
    return None if (windows_long_paths() if long_paths is None else long_paths) \
        else WINDOWS_MAX_PATH


def path_length(path: str) -> int:
    return len(path.encode("utf-16-le")) // 2  # Windows counts UTF-16 units


def longest_run_path(runs: Path, output_name: str, sep: str = os.sep) -> str:
    """The longest path a run of `output_name` in the folder `runs` will write."""
    candidates = [sep.join([str(runs).rstrip("\\/"), RUN_ID,
                            *tail.format(name=output_name).split("/")])
                  for tail in LONGEST_IN_RUN]
    return max(candidates, key=path_length)


def check_run_paths(runs: Path, output_name: str, limit: int | None = None,
                    sep: str = os.sep) -> None:
    """Refuse up front (UserError) a run whose files would pass the path limit: on Windows
    without long paths, a deep project fails at its first LoRA file or resume point instead."""
    from studio.errors import UserError

    limit = path_limit() if limit is None else limit
    if not limit:
        return
    longest = longest_run_path(runs, output_name, sep)
    if (extra := path_length(longest) - limit) > 0:
        raise UserError(
            f"The run's files would have paths of {path_length(longest)} characters, more than "
            f"the {limit} this system allows; the longest is {longest}",
            f"Move the project to a shorter folder (e.g. C:\\LoRA\\), or shorten Output name by "
            f"{extra} characters or more; or turn on Windows' long paths (LongPathsEnabled).",
            "output_name")
