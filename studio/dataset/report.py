"""What a dataset scan found: Items, Findings (one type, one severity table) and the Report.

The GUI and the worker read the same Report; `Report.blocking()` is the one verdict on whether
training can start."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

ERROR, WARNING, INFO = "error", "warning", "info"
# Stable codes (the GUI keys badges and filters on them) and their severity: "error" = cannot
# train on it, "warning" = trains, but probably not as the artist meant, "info" = handled for you.
# A file that is no picture training can read ("unsupported": a .psd or RAW beside the exports;
# "not_a_file": a pipe or device) is a warning: it is left out, and nothing the artist meant to
# train on is lost. Damaged pictures and links out of the dataset stay errors (issue 13).
SEVERITY = {
    "corrupt": ERROR, "bomb": ERROR, "unreadable": ERROR,
    "symlink_outside": ERROR, "broken_link": ERROR, "no_images": ERROR,
    "unsupported": WARNING, "not_a_file": WARNING, "transparency": WARNING, "cmyk": WARNING, "animated": WARNING, "too_small": WARNING,
    "duplicate": WARNING, "near_duplicate": WARNING, "caption_missing": WARNING,
    "caption_empty": WARNING, "caption_not_utf8": WARNING, "caption_too_long": WARNING,
    "caption_shared": WARNING, "case_collision": WARNING, "unsafe_name": WARNING,
    "metadata_line": WARNING,
    "exif_rotated": INFO, "sixteen_bit": INFO, "icc_profile": INFO, "caption_orphan": INFO,
    "folder_ignored": INFO,
}


@dataclass(frozen=True)
class Item:
    """One image as training reads it."""
    image: Path
    caption: str
    caption_file: Path | None  # the sidecar file; None for metadata.jsonl captions or none
    sha256: str  # of the image file's bytes: the cache key, so renames and moves keep the cache
    size: tuple[int, int] = (0, 0)  # (width, height) as trained, i.e. after EXIF rotation
    repeats: int = 1  # times per epoch (kohya `N_name` folders)
    name: str = ""  # path relative to the dataset folder, as `exclude_images` names it


@dataclass(frozen=True)
class Finding:
    path: Path
    code: str
    severity: str
    message: str  # plain words: names the file and says what to do
    other: Path | None = None  # the other file of a pair (duplicate, shared caption, collision)
    detail: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def fatal(self) -> bool:
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
    resolution: int = 0  # 0: the too-small check was not asked for
    repeats: int = 1  # the top folder's repeats; kohya `N_name` subfolders have their own
    images: list[Path] = field(default_factory=list)  # every image file, in training order
    names: dict[Path, str] = field(default_factory=dict)  # "10_style/a.png": as excluded
    folders: dict[str, int] = field(default_factory=dict)  # kohya subfolder -> its repeats
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)  # decoded (EXIF-rotated)
    captions: dict[Path, str] = field(default_factory=dict)  # as trained; "" when none
    items: dict[Path, Item] = field(default_factory=dict)  # decoded images
    findings: list[Finding] = field(default_factory=list)
    excluded: frozenset[str] = frozenset()  # `exclude_images` names
    upscale: bool = False  # upscale_small_images: what the too-small finding says happens

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

    def name(self, image: Path) -> str:
        return self.names.get(image, image.name)

    def group(self, image: Path) -> str:
        """The kohya subfolder an image is in ("" for the top folder)."""
        name = self.name(image)
        return name.split("/", 1)[0] if "/" in name else ""

    def repeats_of(self, image: Path) -> int:
        group = self.group(image)
        return self.folders.get(group, self.repeats) if group else self.repeats

    def is_excluded(self, image: Path) -> bool:
        return self.name(image) in self.excluded

    def used(self) -> list[Path]:
        """Images training uses, in its order: decoded, no error on them, not excluded."""
        bad = {f.path for f in self.errors}
        return [p for p in self.images if p in self.items and p not in bad
                and not self.is_excluded(p)]

    usable = used

    def training_items(self) -> list[Item]:
        """The Items the worker trains on (captions and repeats as they are now)."""
        return [dataclasses.replace(self.items[p], caption=self.captions.get(p, ""),
                                    repeats=self.repeats_of(p)) for p in self.used()]

    def blocking(self) -> list[Finding]:
        """Why training cannot start: errors, except on excluded images, or nothing to train on.
        The worker refuses exactly these (load), and the Train button is disabled on them."""
        excluded = {p for p in self.images if self.is_excluded(p)}
        out = [f for f in self.errors if f.path not in excluded]
        if not out and not self.used():
            why = (f"all {len(self.images)} are excluded; include some" if excluded ==
                   set(self.images) else "none of its files is a picture training can read")
            out.append(Finding(self.folder, "no_images", ERROR,
                               f"no image in {self.folder} is left to train on: {why}"))
        return out

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in (ERROR, WARNING, INFO)}

    def to_json(self) -> dict:
        return {"folder": str(self.folder), "resolution": self.resolution,
                "images": len(self.images), "usable": len(self.used()),
                "folders": dict(self.folders), "counts": self.counts(),
                "blocking": [f.to_json() for f in self.blocking()],
                "findings": [f.to_json() for f in self.findings]}

    def to_text(self) -> str:
        c = self.counts()
        lines = [f"Dataset check of {self.folder}: {len(self.images)} image(s), "
                 f"{len(self.used())} usable" +
                 (f" at {self.resolution}px" if self.resolution else "") +
                 f"; {c[ERROR]} error(s), {c[WARNING]} warning(s), {c[INFO]} note(s)."]
        lines += [f"  {group}/: repeated {times}x per epoch" for group, times in
                  self.folders.items()]
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


class DatasetError(ValueError):
    """The dataset cannot be trained on; `findings` are the blocking ones (all fatal)."""

    def __init__(self, findings: list[Finding], folder: Path, report: Report | None = None):
        self.findings = findings
        self.folder = folder
        self.report = report
        fatal = [f for f in findings if f.fatal]
        super().__init__(f"The dataset in {folder} has {len(fatal)} problem(s):\n" +
                         "\n".join(f"  - {f}" for f in fatal))
