"""Dataset doctor (issue 8): decodes every image, checks captions and names; reads only."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio import images, paths
from studio.dataset import CAPTION_EXTENSIONS

ERROR, WARNING, INFO = "error", "warning", "info"
# Stable codes (the GUI keys badges and filters on them) and their severity: "error" = cannot
# train on it, "warning" = trains, but probably not as the artist meant, "info" = handled for you.
SEVERITY = {
    "corrupt": ERROR, "unsupported": ERROR, "bomb": ERROR, "unreadable": ERROR,
    "symlink_outside": ERROR, "broken_link": ERROR, "no_images": ERROR,
    "transparency": WARNING, "cmyk": WARNING, "animated": WARNING, "too_small": WARNING,
    "duplicate": WARNING, "near_duplicate": WARNING, "caption_missing": WARNING,
    "caption_empty": WARNING, "caption_not_utf8": WARNING, "caption_too_long": WARNING,
    "caption_shared": WARNING, "case_collision": WARNING, "unsafe_name": WARNING,
    "exif_rotated": INFO, "sixteen_bit": INFO, "icc_profile": INFO, "caption_orphan": INFO,
}
MAX_TOKENS = 75  # CLIP's 77 positions minus start/end tokens (SD1.5/SDXL text encoders)
# Near duplicates: pHash bits that may differ. Resized + JPEG q=70 copies measure 0-4, unrelated
# pictures ~32 (tests/test_doctor.py); 10 leaves room for crops of a few pixels and re-edits.
NEAR_BITS = 10
NEAR_COLOUR = 24  # mean abs difference of 8x8 colour thumbnails (0-255); pHash is colour-blind
# CLIP's pre-tokenizer (lower-cased): letter runs, single digits, runs of other symbols.
_PRETOKEN = re.compile(r"'(?:s|t|re|ve|m|ll|d)|[^\W\d_]+|\d|(?:[^\s\w]|_)+")


@dataclass(frozen=True)
class Finding:
    path: Path
    code: str
    severity: str
    message: str  # plain words: names the file and says what to do
    other: Path | None = None  # the other file of a pair (duplicate, shared caption, collision)
    detail: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def fatal(self) -> bool:  # the same meaning as studio.dataset.Finding.fatal
        return self.severity == ERROR

    def to_json(self) -> dict:
        return {"path": str(self.path), "file": self.path.name, "code": self.code,
                "severity": self.severity, "message": self.message,
                "other": str(self.other) if self.other else None, "detail": self.detail}

    def __str__(self) -> str:
        return self.message


@dataclass
class Report:
    folder: Path
    resolution: int
    images: list[Path] = field(default_factory=list)  # checked image files, sorted
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)  # displayed (EXIF-rotated)
    findings: list[Finding] = field(default_factory=list)

    def add(self, path: Path, code: str, message: str, other: Path | None = None,
            **detail) -> None:
        self.findings.append(Finding(path, code, SEVERITY[code], message, other, detail))

    def for_path(self, path: Path) -> list[Finding]:
        return [f for f in self.findings if f.path == Path(path)]

    def codes(self, path: Path) -> set[str]:
        return {f.code for f in self.for_path(path)}

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    def usable(self) -> list[Path]:
        """Images training can use: decoded, and no error on them."""
        bad = {f.path for f in self.errors}
        return [p for p in self.images if p not in bad and p in self.sizes]

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in (ERROR, WARNING, INFO)}

    def to_json(self) -> dict:
        return {"folder": str(self.folder), "resolution": self.resolution,
                "images": len(self.images), "usable": len(self.usable()),
                "counts": self.counts(), "findings": [f.to_json() for f in self.findings]}

    def to_text(self) -> str:
        c = self.counts()
        lines = [f"Dataset check of {self.folder}: {len(self.images)} image(s), "
                 f"{len(self.usable())} usable at {self.resolution}px; {c[ERROR]} error(s), "
                 f"{c[WARNING]} warning(s), {c[INFO]} note(s)."]
        titles = {ERROR: "Errors (these files cannot be trained on; fix or exclude them)",
                  WARNING: "Warnings (these train, but probably not as you meant)",
                  INFO: "Notes (handled automatically)"}
        for severity, title in titles.items():
            group = sorted((f for f in self.findings if f.severity == severity),
                           key=lambda f: (f.code, f.path.name))
            if group:
                lines += ["", title + ":"]
                lines += [f"  [{f.code}] {f.message}" for f in group]
        if not self.findings:
            lines.append("No problems found.")
        return "\n".join(lines)


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


def decode_caption(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (BOM stripped), else cp1252 (Windows Notepad's "ANSI"), else
    latin-1, which decodes anything (reference §3: fall back with a warning)."""
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")


def _caption_file(image: Path, present: set[str]) -> Path | None:
    """The dataset's rule (studio.dataset._caption_file): same stem, .txt before .caption."""
    for ext in CAPTION_EXTENSIONS:
        if image.with_suffix(ext).name in present:
            return image.with_suffix(ext)
    return None


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
    return blocked


def _check_caption(report: Report, image: Path, caption: Path) -> None:
    try:
        text, encoding = decode_caption(caption.read_bytes())
    except OSError as exc:
        report.add(image, "unreadable", f"{caption.name} ({image.name}'s caption) cannot be read "
                   f"({exc.strerror or exc})", other=caption)
        return
    if encoding != "utf-8-sig":
        report.add(image, "caption_not_utf8", f"{caption.name} ({image.name}'s caption) is not "
                   f"UTF-8 text; read as "
                   f"{encoding}: \"{' '.join(text.split())[:80]}\". If that reads right, "
                   f"save the file as UTF-8", other=caption, decoded=text, encoding=encoding)
    words = " ".join(text.split())
    if not words:
        report.add(image, "caption_empty", f"{caption.name} is empty: {image.name} is trained "
                                           f"with the trigger word only", other=caption)
        return
    tokens = estimate_tokens(words)
    if tokens > MAX_TOKENS:
        report.add(image, "caption_too_long", f"{caption.name} ({image.name}'s caption) is "
                   f"about {tokens} text-encoder "
                   f"tokens (an estimate); words after the first {MAX_TOKENS} are ignored: "
                   f"shorten it or put what matters first", other=caption, tokens=tokens)


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
        colour = np.abs(thumbs[:j] - thumbs[j]).mean(axis=(1, 2, 3))
        close = np.flatnonzero((dist <= NEAR_BITS) & (colour <= NEAR_COLOUR))
        if close.size:
            i = int(close[np.argmin(dist[close])])
            report.add(kept[j][0], "near_duplicate", f"{kept[j][0].name} looks like a near copy "
                       f"of {kept[i][0].name} (resized, re-saved or slightly edited): if it is "
                       f"the same picture, exclude one", other=kept[i][0], distance=int(dist[i]))


def check(folder: Path, exclude: tuple[str, ...] = (), resolution: int = 512,
          background: tuple[int, int, int] = (255, 255, 255)) -> Report:
    """Check every image (not recursive) in `folder` and its caption, minus `exclude` file names.
    Reads only: nothing in the folder is written, renamed or touched."""
    folder = Path(folder)
    report = Report(folder, resolution)
    if not folder.is_dir():
        report.add(folder, "no_images", f"the dataset folder {folder} does not exist")
        return report
    root, skip = folder.resolve(), set(exclude)
    image_ext = set(images.EXTENSIONS) | set(images.UNSUPPORTED_EXTENSIONS)
    try:
        entries = sorted(p for p in folder.iterdir() if p.name not in skip and
                         p.suffix.lower() in image_ext | set(CAPTION_EXTENSIONS) and not p.is_dir())
    except OSError as exc:
        report.add(folder, "no_images", f"the dataset folder {folder} cannot be read "
                                        f"({exc.strerror or exc})")
        return report
    blocked = _check_names(report, root, entries)
    report.images = [p for p in entries if p.suffix.lower() in image_ext]
    present = {p.name for p in entries if p.suffix.lower() in CAPTION_EXTENSIONS}
    lower = {paths.collision_key(n): n for n in present}
    users: dict[Path, list[Path]] = defaultdict(list)
    hashes = []
    for path in report.images:
        if path in blocked:
            continue
        try:
            rgb, notes = images.open_rgb(path, background)
        except images.ImageProblem as exc:
            report.add(path, exc.code, f"{path.name} {exc.reason}")
            continue
        for note in notes:
            report.add(path, note.code, f"{path.name} {note}")
        report.sizes[path] = rgb.size
        if min(rgb.size) < resolution:
            report.add(path, "too_small", f"{path.name} is {rgb.size[0]}x{rgb.size[1]}: its "
                       f"short side is under the training resolution {resolution}, so it is "
                       f"upscaled and looks soft; use a larger version or exclude it",
                       size=list(rgb.size))
        hashes.append((path, images.pixel_hash(rgb), _file_sha(path), images.perceptual_hash(rgb),
                       images.colour_thumb(rgb)))
        caption = _caption_file(path, present)
        if caption is None:
            hint = next((lower[paths.collision_key(path.with_suffix(e).name)] for e in
                         CAPTION_EXTENSIONS if paths.collision_key(path.with_suffix(e).name)
                         in lower), None)
            extra = (f" ({hint} exists, but its name differs in upper/lower case)" if hint
                     else f"; add {path.with_suffix('.txt').name} to describe it")
            report.add(path, "caption_missing", f"{path.name} has no caption file: it is "
                                                f"trained with the trigger word only{extra}")
            continue
        users[caption].append(path)
        if caption not in blocked:
            _check_caption(report, path, caption)
    for caption, imgs in users.items():
        for extra in imgs[1:]:
            report.add(extra, "caption_shared", f"{extra.name} and {imgs[0].name} both use "
                       f"{caption.name}: rename one image (and give it its own caption)",
                       other=imgs[0], caption=caption.name)
    for name in sorted(present):
        path = folder / name
        if path in users:
            continue
        twin = next((c for c in users if c.stem == path.stem), None)
        why = (f"{twin.name} is used instead" if twin else
               "no image has that name (was one renamed or removed?)")
        report.add(path, "caption_orphan", f"{name} is not used: {why}")
    _check_duplicates(report, hashes)
    if not report.images:
        report.add(folder, "no_images", f"{folder} contains no images (" +
                   ", ".join(images.EXTENSIONS) + ")")
    return report


def _file_sha(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
