"""The one dataset scan: walk, decode each image once, read captions, report what is wrong.

It walks the folder plus its kohya `N_name` subfolders, reads captions by the one rule
(studio.dataset.captions) and never writes to the dataset folder.

The GUI's Dataset tab (summary.examine), `python -m training check` and the worker (`load`) all
call `scan`, so they agree on the images used, their repeats and captions, and what blocks
training (`Report.blocking`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from studio import paths
from studio.dataset import captions, images
from studio.dataset.report import DatasetError, Item, Report

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = images.EXTENSIONS
# Formats the scan lists (and reports as unsupported) besides the ones it trains on.
LISTED_EXTENSIONS = frozenset(images.EXTENSIONS) | frozenset(images.UNSUPPORTED_EXTENSIONS)
_REPEATS = re.compile(r"^(\d+)_(.+)$")  # kohya: "10_mystyle" = images trained 10 times per epoch
# Near duplicates: pHash bits that may differ. Resized + JPEG q=70 copies measure 0-4, unrelated
# pictures ~32 (tests/test_doctor.py); 10 leaves room for crops of a few pixels and re-edits.
NEAR_BITS = 10
NEAR_COLOUR = 24  # mean abs difference of 8x8 colour thumbnails (0-255); pHash is colour-blind
# ... and no 8x8 cell of them may differ by more than this (mean over RGB): a copy changes every
# cell a little, another picture on the same background changes a few cells a lot. The demo set
# (assets/demo-style: one shape on one dotted background) has different pictures within the two
# rules above at >= 32; re-saved copies measure <= 22 (a 64 px image shrunk to 38 px and JPEG
# q=70), 2 % crops of large images <= 27 (tests/test_doctor.py).
NEAR_CELL = 28


def folder_repeats(name: str) -> int | None:
    """The repeats of a kohya-style `N_name` folder (None for any other name)."""
    match = _REPEATS.match(name)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def folders(folder: Path, repeats: int = 1) -> list[tuple[Path, str, int]]:
    """(folder, group name, repeats): the dataset folder itself ("", `repeats`) and its kohya
    `N_name` subfolders, sorted by name. Other subfolders are not part of the dataset."""
    out = [(Path(folder), "", repeats)]
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        times = folder_repeats(sub.name)
        if times:
            out.append((sub, sub.name, times))
    return out


def image_files(folder: Path, repeats: int = 1) -> list[tuple[Path, str, int]]:
    """(image file, name as `exclude_images` gives it, repeats) in training order, without
    opening any image: the folder walk the scan, the Dataset tab and the folder drop share."""
    out, root = [], Path(folder).resolve()
    try:
        for where, group, times in folders(folder, repeats):
            if group and not paths.is_inside(where, root):
                continue  # a linked folder outside the dataset: never listed (scan says why)
            prefix = f"{group}/" if group else ""
            # Plain files and broken links only: a FIFO or device named *.png would block the
            # GUI's thumbnail reader forever (issue 13); the scan reports them.
            out += [(p, prefix + p.name, times) for p in sorted(where.iterdir())
                    if p.suffix.lower() in LISTED_EXTENSIONS and
                    (p.is_file() or (p.is_symlink() and not p.exists()))]
    except OSError:
        return []
    return out


def _special(path: Path) -> bool:
    """A pipe, socket or device (links followed): opening one may block forever, so it is never
    opened, only reported (issue 13: a FIFO named *.png hung check and train)."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _entries(where: Path) -> list[Path]:
    keep = LISTED_EXTENSIONS | set(captions.CAPTION_EXTENSIONS)
    return sorted(p for p in where.iterdir() if p.suffix.lower() in keep and not p.is_dir())


def _check_names(report: Report, root: Path, entries: list[Path]) -> set[Path]:
    """Unsafe names, case collisions and symlinks; returns entries that must not be opened."""
    blocked, seen = set(), {}
    for path in entries:
        problem = paths.name_problem(path.name)
        if problem:
            report.add(path, "unsafe_name", f"{path.name!r} {problem}: rename it, or the dataset "
                                            f"breaks when copied to Windows", reason=problem)
        key = paths.collision_key(path.name)
        if key in seen:
            report.add(path, "case_collision", f"{path.name} and {seen[key].name} differ only in "
                       f"upper/lower case: on Windows and macOS they are the same file and one "
                       f"overwrites the other; rename one", other=seen[key])
        seen.setdefault(key, path)
        if path.is_symlink():
            blocked.add(path)
            if not path.exists():
                report.add(path, "broken_link", f"{path.name} is a link to a file that does not "
                                                f"exist; remove it or restore the target")
            elif not paths.is_inside(path, root):
                # Never follow links out of the dataset (reference §5.3): a link to ~/.ssh/... or
                # to a huge file elsewhere is refused, not read.
                report.add(path, "symlink_outside", f"{path.name} is a link to "
                           f"{path.resolve()}, outside the dataset folder: it is not used; copy "
                           f"the file into the folder instead", target=str(path.resolve()))
            else:
                blocked.discard(path)
        if _special(path):
            blocked.add(path)
            report.add(path, "not_a_file", f"{path.name} is not a regular file (a pipe, socket "
                                           f"or device): it is not used")
    return blocked


def _metadata(report: Report, root: Path, where: Path) -> dict[str, str]:
    path = where / captions.METADATA_FILE
    if path.is_symlink() and path.exists() and not paths.is_inside(path, root):
        report.add(path, "symlink_outside", f"{captions.METADATA_FILE} in {where.name} is a "
                   f"link to {path.resolve()}, outside the dataset folder: its captions are not "
                   f"used; copy the file into the folder instead", target=str(path.resolve()))
        return {}  # never read through a link out of the dataset (as for images)
    if not path.is_file() or not paths.is_inside(path, root):
        return {}
    try:
        rows, problems, encoding = captions.read_metadata(path)
    except OSError as exc:
        report.add(path, "unreadable", f"{path} cannot be read ({exc.strerror or exc})")
        return {}
    for problem in problems:
        report.add(path, "metadata_line", f"{captions.METADATA_FILE} in {where.name}: {problem}")
    if not captions.is_utf8(encoding):
        report.add(path, "caption_not_utf8", f"{path.name} in {where.name} is not UTF-8 text; "
                   f"read as {encoding}. If its captions read right, save it as UTF-8",
                   encoding=encoding)
    return rows


def _caption(report: Report, image: Path, metadata: dict[str, str], blocked: set[Path],
             lower: dict[str, str]) -> Path | None:
    """Read `image`'s caption by the one rule into report.captions; returns its sidecar file.
    `lower`: caption file names by case-folded name, to point at a near miss."""
    report.captions[image] = ""
    where = captions.source(image, metadata)
    if where is None:
        hint = next((lower[key] for key in (paths.collision_key(image.with_suffix(e).name)
                                            for e in captions.CAPTION_EXTENSIONS)
                     if key in lower), None)
        extra = (f" ({hint} exists, but its name differs in upper/lower case)" if hint
                 else f"; add {image.with_suffix('.txt').name} to describe it")
        report.add(image, "caption_missing",
                   f"{image.name} has no caption file: {captions.NO_CAPTION}{extra}")
        return None
    if where.in_metadata:
        text, name = where.text, f"{image.name}'s row in {captions.METADATA_FILE}"
    else:
        name = f"{where.path.name} ({image.name}'s caption)"
        if where.path in blocked:
            return where.path
        try:
            text, encoding = captions.decode(where.path.read_bytes())
        except OSError as exc:
            report.add(image, "unreadable", f"{name} cannot be read ({exc.strerror or exc})",
                       other=where.path)
            return where.path
        if not captions.is_utf8(encoding):
            report.add(image, "caption_not_utf8", f"{name} is not UTF-8 text; trained as read "
                       f"with {encoding}: \"{captions.as_trained(text)[:80]}\". If that reads "
                       f"right, save the file as UTF-8", other=where.path, decoded=text,
                       encoding=encoding)
    words = captions.as_trained(text)
    report.captions[image] = words
    if not words:
        report.add(image, "caption_empty", f"{name} is empty: {captions.NO_CAPTION}",
                   other=where.path)
    elif (tokens := captions.estimate_tokens(words)) > captions.MAX_TOKENS:
        report.add(image, "caption_too_long", f"{name} is about {tokens} text-encoder tokens "
                   f"(an estimate); words after the first {captions.MAX_TOKENS} are ignored: "
                   f"shorten it or put what matters first", other=where.path, tokens=tokens)
    return None if where.in_metadata else where.path


def _decode(report: Report, path: Path, caption_file: Path | None, times: int,
            hashes: list) -> str | None:
    """Open the image exactly as training will (a full decode), so a broken file is named
    before any model is loaded, rather than failing mid-run. Returns the problem's code."""
    try:
        rgb, notes = images.open_rgb(path)
    except images.ImageProblem as exc:
        unused = " (it is not used)" if exc.code == "unsupported" else ""
        report.add(path, exc.code, f"{path.name} {exc.reason}{unused}")
        return exc.code
    for note in notes:
        report.add(path, note.code, f"{path.name} {note}")
    report.sizes[path] = rgb.size
    if min(rgb.size) < report.resolution:
        report.add(path, "too_small", too_small_message(path, rgb.size, report.resolution,
                                                        report.upscale),
                   size=list(rgb.size))
    with path.open("rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    hashes.append((path, images.pixel_hash(rgb), sha, images.perceptual_hash(rgb),
                   images.colour_thumb(rgb)))
    report.items[path] = Item(path, report.captions[path], caption_file, sha, rgb.size, times,
                              report.names[path])


def too_small_message(path: Path, size: tuple[int, int], resolution: int,
                      upscale: bool = False) -> str:
    """What happens to a small image depends on `upscale_small_images` (studio/dataset/plan.py):
    enlarged to its bucket (soft), or trained in a smaller bucket of its own (less detail)."""
    happens = ("so it is upscaled and looks soft" if upscale else
               "so it trains at its own smaller size and teaches less detail")
    return (f"{path.name} is {size[0]}x{size[1]}: its short side is under the training "
            f"resolution {resolution}, {happens}; use a larger version or exclude it")


def _identity(path: Path):
    """The file a name opens (links not followed): on Windows and macOS `a.txt` opens `a.TXT`,
    so the lookup's name and the folder listing's name are two names of one file."""
    try:
        st = path.lstat()
    except OSError:
        return path
    return (st.st_dev, st.st_ino) if st.st_ino else paths.collision_key(path.name)


def _scan_folder(report: Report, root: Path, where: Path, group: str, times: int,
                 hashes: list) -> None:
    entries = _entries(where)
    blocked = _check_names(report, root, entries)
    metadata = _metadata(report, root, where)
    present = {p.name for p in entries if p.suffix.lower() in captions.CAPTION_EXTENSIONS}
    lower = {paths.collision_key(n): n for n in present}
    on_disk = {_identity(where / n): where / n for n in present}  # each caption's listed name
    users: dict[Path, list[Path]] = defaultdict(list)
    for path in (p for p in entries if p.suffix.lower() in LISTED_EXTENSIONS):
        if path in blocked and _special(path):
            continue  # not an image file at all: a finding only, never listed nor opened
        report.images.append(path)
        report.names[path] = f"{group}/{path.name}" if group else path.name
        if path in blocked:
            # Not opened, but listed: its caption is still its own (the editor shows it), so
            # the caption is not called unused (issue 14).
            own = captions.source(path, metadata)
            if own is not None and not own.in_metadata:
                users[on_disk.get(_identity(own.path), own.path)].append(path)
            continue
        caption_file = _caption(report, path, metadata, blocked, lower)
        if caption_file is not None:
            caption_file = on_disk.get(_identity(caption_file), caption_file)
            users[caption_file].append(path)
        if not report.is_excluded(path) and \
                _decode(report, path, caption_file, times, hashes) == "unsupported":
            # Not a picture it trains on (a .psd beside the exports): its caption's findings
            # ("trained with the trigger word only") would not be true.
            report.findings = [f for f in report.findings
                               if f.path != path or not f.code.startswith("caption_")]
    for caption, imgs in users.items():
        for extra in imgs[1:]:
            report.add(extra, "caption_shared", f"{extra.name} and {imgs[0].name} both use "
                       f"{caption.name}: rename one image (and give it its own caption)",
                       other=imgs[0], caption=caption.name)
    used = {_identity(c) for c in users}
    for name in sorted(present):
        path = where / name
        if _identity(path) in used:
            continue
        twin = next((c for c in users if c.stem == path.stem), None)
        image = where / path.stem  # "a.png.txt": named after the whole file name
        why = (f"{twin.name} is used instead" if twin else
               f"{image.name}'s caption is read from {image.with_suffix('.txt').name}; rename "
               f"it" if image in report.names else
               "no image has that name (was one renamed or removed?)")
        report.add(path, "caption_orphan", f"{name} is not used: {why}")


def _check_duplicates(report: Report, hashes: list[tuple[Path, str, str, int, np.ndarray]]) -> None:
    """Exact copies (same decoded pixels) and near copies (pHash), reported once per later file."""
    first: dict[str, tuple[Path, str]] = {}
    kept = []
    for path, pixels, sha, phash, thumb in hashes:
        if pixels in first:
            orig, orig_sha = first[pixels]
            how = "same bytes" if sha == orig_sha else "same pixels, saved differently"
            report.add(path, "duplicate", f"{path.name} is an exact copy of {orig.name} ({how}): "
                       f"it is trained twice as often; exclude one", other=orig)
            continue
        first[pixels] = (path, sha)
        kept.append((path, phash, thumb))
    if len(kept) < 2:
        return
    bits = np.array([k[1] for k in kept], dtype=np.uint64)
    thumbs = np.stack([k[2] for k in kept])
    for j in range(1, len(kept)):
        diff = np.bitwise_xor(bits[:j], bits[j])
        dist = np.unpackbits(diff.view(np.uint8).reshape(j, 8), axis=1).sum(axis=1)
        cells = np.abs(thumbs[:j] - thumbs[j]).mean(axis=3)
        colour, worst = cells.mean(axis=(1, 2)), cells.max(axis=(1, 2))
        close = np.flatnonzero((dist <= NEAR_BITS) & (colour <= NEAR_COLOUR)
                               & (worst <= NEAR_CELL))
        if close.size:
            i = int(close[np.argmin(dist[close])])
            report.add(kept[j][0], "near_duplicate", f"{kept[j][0].name} looks like a near copy "
                       f"of {kept[i][0].name} (resized, re-saved or slightly edited): if it is "
                       f"the same picture, exclude one", other=kept[i][0], distance=int(dist[i]))


def scan(folder: Path, exclude: tuple[str, ...] = (), repeats: int = 1,
         resolution: int = 0, upscale: bool = False) -> Report:
    """Every image in `folder` and its `N_name` subfolders, with captions, sizes and findings.
    Images named in `exclude` are listed but not opened; `resolution` > 0 adds the too-small
    check. Reads only: nothing in the folder is written, renamed or touched."""
    folder = Path(folder)
    report = Report(folder, resolution, repeats, upscale=upscale, excluded=frozenset(exclude))
    if not folder.is_dir():
        report.add(folder, "no_images", f"the dataset folder {folder} does not exist")
        return report
    root, hashes = folder.resolve(), []
    try:
        walk = folders(folder, repeats)
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if not folder_repeats(sub.name) and any(
                    p.suffix.lower() in LISTED_EXTENSIONS for p in sub.iterdir()):
                report.add(sub, "folder_ignored", f"the subfolder {sub.name} is not used: only "
                           f"subfolders named like 10_{sub.name} (repeats_name) are trained")
        for where, group, times in walk:
            if group and not paths.is_inside(where, root):
                # A kohya folder linked out of the dataset: nothing in it is read (issue 13).
                report.add(where, "symlink_outside", f"the folder {where.name} is a link to "
                           f"{where.resolve()}, outside the dataset folder: its files are not "
                           f"used; copy them into the dataset folder instead",
                           target=str(where.resolve()))
                continue
            if group:
                report.folders[group] = times
            _scan_folder(report, root, where, group, times, hashes)
    except OSError as exc:
        report.add(folder, "no_images", f"the dataset folder {folder} cannot be read "
                                        f"({exc.strerror or exc})")
        return report
    _check_duplicates(report, hashes)
    if not report.images:
        report.add(folder, "no_images", f"{folder} contains no images (" +
                   ", ".join(images.EXTENSIONS) + ")")
    return report


def load(folder: Path, exclude: tuple[str, ...] = (), repeats: int = 1,
         resolution: int = 0) -> list[Item]:
    """The Items to train on (`scan`'s verdict); raises DatasetError naming every blocking file.
    Warnings are logged (the worker's log and stderr): they train, as the GUI says."""
    report = scan(folder, exclude, repeats, resolution)
    blocking = report.blocking()
    if blocking:
        raise DatasetError(blocking, Path(folder), report)
    by_code: dict[str, list[str]] = defaultdict(list)
    for f in report.findings:
        if f.severity == "warning":
            by_code[f.code].append(f.message)
    for code, messages in by_code.items():
        more = f" (and {len(messages) - 3} more)" if len(messages) > 3 else ""
        log.warning("dataset: %s%s", "; ".join(messages[:3]), more)
    return report.training_items()
