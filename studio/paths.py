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

