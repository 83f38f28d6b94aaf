"""A training dataset: images with same-stem .txt/.caption files, scanned and checked, never modified."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_EXTENSIONS = (".txt", ".caption")


@dataclass(frozen=True)
class Item:
    image: Path
    caption: str
    caption_file: Path | None
    sha256: str  # of the image file's bytes: the cache key, so renames and moves keep the cache


@dataclass(frozen=True)
class Finding:
    path: Path
    message: str
    fatal: bool

    def __str__(self) -> str:
        return f"{self.path.name}: {self.message}"


class DatasetError(ValueError):
    def __init__(self, findings: list[Finding], folder: Path):
        self.findings = findings
        self.folder = folder
        fatal = [f for f in findings if f.fatal]
        super().__init__(f"The dataset in {folder} has {len(fatal)} problem(s):\n" +
                         "\n".join(f"  - {f}" for f in fatal))


def _caption_file(image: Path) -> Path | None:
    for ext in CAPTION_EXTENSIONS:
        candidate = image.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def _read_caption(path: Path) -> str:
    # utf-8-sig: Windows editors often prepend a byte-order mark.
    return " ".join(path.read_bytes().decode("utf-8-sig").split())


def full_caption(caption: str, trigger_word: str) -> str:
    """The caption as trained: the trigger word first, once."""
    if not trigger_word:
        return caption
    parts = [p.strip() for p in caption.split(",")] if caption else []
    parts = [p for p in parts if p and p != trigger_word]
    return ", ".join([trigger_word, *parts])


def scan(folder: Path, exclude: tuple[str, ...] = ()) -> tuple[list[Item], list[Finding]]:
    """Every image in `folder` (not recursive, minus `exclude` file names) with its caption, plus
    what is wrong with them.

    Images are fully decoded here so that a broken file is named before any model is loaded,
    rather than failing mid-run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError([Finding(folder, "folder does not exist", True)], folder)
    items, findings = [], []
    skip = set(exclude)
    for path in sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in skip):
        data = path.read_bytes()
        try:
            with Image.open(path) as im:
                im.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            findings.append(Finding(path, f"cannot be decoded as an image ({exc}); fix or remove "
                                          f"it", True))
            continue
        cap_file = _caption_file(path)
        caption = ""
        if cap_file is None:
            findings.append(Finding(path, "has no caption file: trained with the trigger word "
                                          "only", False))
        else:
            try:
                caption = _read_caption(cap_file)
            except UnicodeDecodeError as exc:
                findings.append(Finding(cap_file, f"is not UTF-8 text (byte {exc.start}); save it "
                                                  f"as UTF-8", True))
                continue
        items.append(Item(path, caption, cap_file, hashlib.sha256(data).hexdigest()))
    if not items and not any(f.fatal for f in findings):
        findings.append(Finding(folder, "contains no images (" + ", ".join(IMAGE_EXTENSIONS) +
                                ")", True))
    return items, findings


def load(folder: Path, exclude: tuple[str, ...] = ()) -> list[Item]:
    """The dataset's items; raises DatasetError naming every unusable file."""
    items, findings = scan(folder, exclude)
    if any(f.fatal for f in findings):
        raise DatasetError(findings, Path(folder))
    return items


def tag_frequency(items: list[Item], trigger_word: str = "") -> dict[str, int]:
    """How often each comma-separated tag occurs (kohya's ss_tag_frequency)."""
    counts: Counter[str] = Counter()
    for item in items:
        caption = full_caption(item.caption, trigger_word)
        counts.update(t.strip() for t in caption.split(",") if t.strip())
    return dict(counts.most_common())


def load_square(path: Path, size: int) -> Image.Image:
    """The image as trained: EXIF-rotated, alpha on white, shortest side resized, centre-cropped."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        im = im.convert("RGB")
        return ImageOps.fit(im, (size, size), method=Image.Resampling.LANCZOS)


PREPROCESS_VERSION = "square-lanczos-v1"  # bump when load_square changes: it is part of cache keys
