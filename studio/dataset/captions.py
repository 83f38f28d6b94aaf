"""Captions: the one rule for finding an image's caption, the one decoder, and edits with undo.

An image's caption is its same-stem sidecar file (.txt before .caption), else the row for it in
its folder's `metadata.jsonl` (Hugging Face imagefolder: `{"file_name", "text"}`, file names
relative to that folder), else none. The worker's scan and the GUI's editor both go through
`source()` and `decode()`, so they always agree on which text an image trains with.

Only caption files (and metadata.jsonl rows) are ever written, atomically; images never are. Every
edit returns the `Change`s it made so the GUI can undo them exactly, including removing a
caption file that the edit itself created.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from studio import atomic
from studio.dataset.augment import full_caption

CAPTION_EXTENSIONS = (".txt", ".caption")
METADATA_FILE = "metadata.jsonl"
MAX_TOKENS = 75  # CLIP's 77 positions minus start/end tokens (SD1.5/SDXL text encoders)
# CLIP's pre-tokenizer (lower-cased): letter runs, single digits, runs of other symbols.
_PRETOKEN = re.compile(r"'(?:s|t|re|ve|m|ll|d)|[^\W\d_]+|\d|(?:[^\s\w]|_)+")


# What a missing or empty caption means, said the same whether or not a trigger word is set.
NO_CAPTION = "it trains with no caption of its own (just the trigger word, if one is set)"

def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (a BOM is fine), UTF-16 with a BOM (Notepad's "Unicode"), else
    cp1252 (Notepad's "ANSI" on Western Windows), else latin-1, which decodes any bytes.

    The one decision on odd encodings: a caption an artist wrote in Notepad trains, and the
    scan adds a `caption_not_utf8` warning showing the text as read, so a wrong guess is seen.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            pass
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")


def is_utf8(encoding: str) -> bool:
    return encoding in ("utf-8-sig", "utf-16")


def as_trained(text: str) -> str:
    """The caption as the trainer reads it: whitespace (line breaks included) collapsed."""
    return " ".join(text.split())


def caption_file(image: Path) -> Path | None:
    """The existing sidecar caption file of an image (.txt before .caption)."""
    for ext in CAPTION_EXTENSIONS:
        candidate = image.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


# --- metadata.jsonl ------------------------------------------------------------------------------

def _row_key(file_name: str) -> str:
    # Both spellings of separators: a metadata.jsonl written on Windows may use '\'.
    return PurePosixPath(str(file_name).replace("\\", "/")).as_posix().removeprefix("./")


def _text_key(row: dict) -> str:
    return "text" if "text" in row or "caption" not in row else "caption"


def read_metadata(path: Path) -> tuple[dict[str, str], list[str], str]:
    """(file name -> caption text, problems as 'line N …', the file's encoding). Later rows for
    the same file win, as in a dict."""
    text, encoding = decode(path.read_bytes())
    captions, problems = {}, []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            captions[_row_key(row["file_name"])] = str(row.get(_text_key(row), ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            problems.append(f"line {n} is not a {{\"file_name\", \"text\"}} object; ignored")
    return captions, problems, encoding


def _write_metadata_caption(image: Path, text: str) -> None:
    """Set the caption of `image`'s row(s), keeping every other line exactly as it was."""
    path = image.parent / METADATA_FILE
    raw = path.read_bytes()
    content, _ = decode(raw)
    lines = content.splitlines(keepends=True)
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or _row_key(row["file_name"]) != image.name:
                continue
        except (ValueError, KeyError, TypeError):
            continue
        row[_text_key(row)] = text
        ending = line[len(line.rstrip("\r\n")):]
        lines[i] = json.dumps(row, ensure_ascii=False) + ending
    bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
    atomic.write_text(path, bom + "".join(lines).removeprefix("\ufeff"))


# --- the rule ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where an image's caption lives: a sidecar file, or a row of metadata.jsonl (`text`)."""
    path: Path
    in_metadata: bool = False
    text: str = ""  # the row's text (a sidecar file is read by whoever needs it)


def source(image: Path, metadata: dict[str, str] | None = None) -> Source | None:
    """The caption of `image`: its sidecar file, else its metadata.jsonl row, else None.
    `metadata`: the folder's rows already read (the scan reads each metadata.jsonl once)."""
    sidecar = caption_file(image)
    if sidecar is not None:
        return Source(sidecar)
    if metadata is None:
        path = image.parent / METADATA_FILE
        metadata = read_metadata(path)[0] if path.is_file() else {}
    if image.name in metadata:
        return Source(image.parent / METADATA_FILE, True, metadata[image.name])
    return None


def read(image: Path) -> str | None:
    """The caption's text as written, decoded by `decode` (None when the image has none)."""
    where = source(image)
    if where is None:
        return None
    return where.text if where.in_metadata else decode(where.path.read_bytes())[0]


@dataclass(frozen=True)
class Change:
    image: Path
    path: Path  # the caption file written (a sidecar, or the metadata.jsonl)
    old: str | None  # None: the file did not exist before
    new: str


def _put(image: Path, path: Path, text: str) -> None:
    if path.name == METADATA_FILE:
        _write_metadata_caption(image, text)
    else:
        atomic.write_text(path, text)


def write(image: Path, text: str) -> Change | None:
    """Save one caption atomically where it lives; None when the text is unchanged. An image
    without a caption gets a new .txt file (the format every trainer reads)."""
    old = read(image)
    if old == text or (old is None and not text):
        return None
    where = source(image)
    path = where.path if where else image.with_suffix(".txt")
    _put(image, path, text)
    return Change(image, path, old, text)


def revert(changes: Iterable[Change]) -> None:
    """Undo: put back each caption's previous text, or remove a caption file an edit created."""
    for change in changes:
        if change.old is None:
            change.path.unlink(missing_ok=True)
        else:
            _put(change.image, change.path, change.old)


def reapply(changes: Iterable[Change]) -> None:
    for change in changes:
        _put(change.image, change.path, change.new)


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


# --- caption text --------------------------------------------------------------------------------

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


def estimate_tokens(text: str) -> int:
    """CLIP tokens a caption needs, estimated without the tokenizer: one per pre-token, plus one
    per 8 letters of long words and per 2 characters of symbol runs (BPE splits rare words). The
    training worker counts exactly; this only has to be close enough to warn."""
    count = 0
    for piece in _PRETOKEN.findall(text.lower()):
        if piece[0].isalpha():
            count += 1 + len(piece) // 8
        elif piece[0].isdigit() or piece[0] == "'":
            count += 1
        else:
            count += (len(piece) + 1) // 2
    return count


def tag_frequency(items, trigger_word: str = "") -> dict[str, int]:
    """How often each comma-separated tag occurs in these Items (kohya's ss_tag_frequency)."""
    counts: Counter[str] = Counter()
    for item in items:
        counts.update(tags(full_caption(item.caption, trigger_word)))
    return dict(counts.most_common())
