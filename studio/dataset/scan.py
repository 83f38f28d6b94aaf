"""A training dataset: images with same-stem .txt/.caption files, scanned and checked, never modified."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from studio import images

from studio.caption_augment import full_caption  # noqa: F401 - part of this module's API

IMAGE_EXTENSIONS = images.EXTENSIONS
_REPEATS = re.compile(r"^(\d+)_(.+)$")  # kohya: "10_mystyle" = images trained 10 times per epoch
METADATA_FILE = "metadata.jsonl"  # Hugging Face imagefolder captions: {"file_name", "text"}
CAPTION_EXTENSIONS = (".txt", ".caption")


@dataclass(frozen=True)
class Item:
    image: Path
    caption: str
    caption_file: Path | None
    sha256: str  # of the image file's bytes: the cache key, so renames and moves keep the cache
    size: tuple[int, int] = (0, 0)  # (width, height) as trained, i.e. after EXIF rotation
    repeats: int = 1  # times per epoch (kohya `N_name` folders)
    name: str = ""  # path relative to the dataset folder, as `exclude_images` names it


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


def caption_file(image: Path) -> Path | None:
    """The existing caption file of an image (.txt before .caption)."""
    for ext in CAPTION_EXTENSIONS:
        candidate = image.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def _read_caption(path: Path) -> str:
    # utf-8-sig: Windows editors often prepend a byte-order mark.
    return " ".join(path.read_bytes().decode("utf-8-sig").split())


def _metadata_captions(folder: Path, findings: list[Finding]) -> dict[str, str]:
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}
    captions = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            captions[Path(row["file_name"]).name] = str(row.get("text", row.get("caption", "")))
        except (ValueError, KeyError, TypeError):
            findings.append(Finding(path, f"line {n} is not a {{\"file_name\", \"text\"}} "
                                          f"object; ignored", False))
    return captions


def _folders(folder: Path, default_repeats: int) -> list[tuple[Path, int]]:
    """The dataset folder itself plus kohya-style `N_name` subfolders with their repeats."""
    out = [(folder, default_repeats)]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        match = _REPEATS.match(sub.name)
        if match and int(match.group(1)) > 0:
            out.append((sub, int(match.group(1))))
    return out


def scan(folder: Path, exclude: tuple[str, ...] = (),
         repeats: int = 1) -> tuple[list[Item], list[Finding]]:
    """Every image in `folder` and its `N_name` repeat subfolders (minus `exclude` names), with
    captions from same-stem .txt/.caption files or metadata.jsonl, plus what is wrong with them.

    Images are fully decoded here so that a broken file is named before any model is loaded,
    rather than failing mid-run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError([Finding(folder, "folder does not exist", True)], folder)
    items, findings = [], []
    skip = set(exclude)
    for sub, times in _folders(folder, repeats):
        from_metadata = _metadata_captions(sub, findings)
        prefix = "" if sub == folder else f"{sub.name}/"
        for path in sorted(p for p in sub.iterdir()
                           if p.suffix.lower() in IMAGE_EXTENSIONS and prefix + p.name not in skip):
            item = _read_item(path, prefix + path.name, times, from_metadata, findings)
            if item is not None:
                items.append(item)
    if not items and not any(f.fatal for f in findings):
        findings.append(Finding(folder, "contains no images (" + ", ".join(IMAGE_EXTENSIONS) +
                                ")", True))
    return items, findings


def _read_item(path: Path, name: str, repeats: int, from_metadata: dict[str, str],
               findings: list[Finding]) -> Item | None:
    data = path.read_bytes()
    try:
        size = images.open_rgb(path)[0].size  # a full decode, exactly as training will do it
    except images.ImageProblem as exc:
        findings.append(Finding(path, f"cannot be decoded as an image ({exc.reason}); fix or "
                                      f"remove it", True))
        return None
    cap_file = caption_file(path)
    caption = ""
    if cap_file is not None:
        try:
            caption = _read_caption(cap_file)
        except UnicodeDecodeError as exc:
            findings.append(Finding(cap_file, f"is not UTF-8 text (byte {exc.start}); save it as "
                                              f"UTF-8", True))
            return None
    elif path.name in from_metadata:
        caption = " ".join(from_metadata[path.name].split())
    else:
        findings.append(Finding(path, "has no caption file: trained with the trigger word only",
                                False))
    return Item(path, caption, cap_file, hashlib.sha256(data).hexdigest(), size, repeats, name)


def load(folder: Path, exclude: tuple[str, ...] = (), repeats: int = 1) -> list[Item]:
    """The dataset's items; raises DatasetError naming every unusable file."""
    items, findings = scan(folder, exclude, repeats)
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


def load_fitted(path: Path, size: tuple[int, int]) -> Image.Image:
    """The image as trained: normalised by images.open_rgb (EXIF, transparency, 16-bit, CMYK,
    ICC), resized to cover `size` (width, height) and centre-cropped to it."""
    image, _ = images.open_rgb(path)
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)


PREPROCESS_VERSION = "open_rgb-fit-lanczos-v2"  # bump when load_fitted changes: it is part of cache keys
