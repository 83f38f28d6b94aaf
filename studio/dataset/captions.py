"""Caption sidecar files: read, edit one, bulk edits (trigger word, find & replace) with undo data.

Only caption files are ever written (atomically); images are never opened for writing. Every
edit returns the `Change`s it made so the GUI can undo them exactly, including removing a
caption file that the edit itself created.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from studio import atomic
from studio.dataset import caption_file as sidecar  # the dataset scan's own rule


def read(image: Path) -> str | None:
    """The caption file's text as written (None when there is no caption file)."""
    path = sidecar(image)
    if path is None:
        return None
    # utf-8-sig: Windows editors often prepend a byte-order mark. Undecodable bytes are shown
    # as U+FFFD rather than failing; the dataset doctor already reports such files.
    return path.read_bytes().decode("utf-8-sig", errors="replace")


@dataclass(frozen=True)
class Change:
    image: Path
    path: Path  # the caption file written
    old: str | None  # None: the file did not exist before
    new: str


def write(image: Path, text: str) -> Change | None:
    """Save one caption atomically; None when the text is unchanged."""
    old = read(image)
    if old == text or (old is None and not text):
        return None
    path = sidecar(image) or image.with_suffix(".txt")
    atomic.write_text(path, text)
    return Change(image, path, old, text)


def revert(changes: Iterable[Change]) -> None:
    """Undo: put back each file's previous text, or remove a caption file an edit created."""
    for change in changes:
        if change.old is None:
            change.path.unlink(missing_ok=True)
        else:
            atomic.write_text(change.path, change.old)


def reapply(changes: Iterable[Change]) -> None:
    for change in changes:
        atomic.write_text(change.path, change.new)


def bulk(images: Iterable[Path], edit: Callable[[str], str]) -> list[Change]:
    """Apply `edit` to each image's caption (missing = ""); write only the ones that change."""
    changes = []
    for image in images:
        old = read(image)
        new = edit(old or "")
        if new != (old or ""):
            change = write(image, new)
            if change:
                changes.append(change)
    return changes


def preview(images: Iterable[Path], edit: Callable[[str], str]) -> int:
    """How many captions `edit` would change (for the dialog's "N captions will change")."""
    return sum(1 for image in images if edit(read(image) or "") != (read(image) or ""))


def tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def add_trigger(caption: str, word: str) -> str:
    """Put the trigger word first, unless it is already one of the caption's tags."""
    word = word.strip()
    if not word or word in tags(caption):
        return caption
    rest = caption.strip()
    return f"{word}, {rest}" if rest else word


def _tidy(text: str) -> str:
    # A replacement with "" (removing a tag) leaves ", ," and stray separators behind.
    text = re.sub(r"\s*,\s*(,\s*)+", ", ", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return text.strip().strip(",").strip()


def replacer(find: str, replace: str, whole_words: bool = False,
             match_case: bool = True) -> Callable[[str], str]:
    """A caption edit replacing every `find` with `replace` (literal text, not a pattern)."""
    if not find:
        return lambda caption: caption
    pattern = re.escape(find)
    if whole_words:
        pattern = rf"(?<!\w){pattern}(?!\w)"
    regex = re.compile(pattern, 0 if match_case else re.IGNORECASE)

    def edit(caption: str) -> str:
        new = regex.sub(lambda _: replace, caption)
        return _tidy(new) if new != caption else caption
    return edit
