"""The Dataset tab's view of a dataset: studio.doctor's findings per image, the captions, the
exclusions, and the summary numbers (sizes, aspect buckets, caption style).

studio.doctor does the checking (issue 8; the worker agrees with it on what is fatal); this
module only arranges its report for the GUI and keeps it current after caption edits and
exclusions without a re-scan. It runs off the GUI thread: the doctor decodes every image.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from studio import buckets, captions, plan
from studio.caption_augment import detect_style
from studio.dataset import IMAGE_EXTENSIONS

# Filter keys offered by the GUI -> the doctor codes they show ("problems" = errors + warnings).
GROUPS = {
    "errors": None, "problems": None,
    "duplicates": ("duplicate", "near_duplicate"),
    "captions": ("caption_missing", "caption_empty", "caption_not_utf8", "caption_too_long",
                 "caption_shared"),
    "too_small": ("too_small",),
}
CAPTION_CODES = GROUPS["captions"]


@dataclass(frozen=True)
class Issue:
    image: Path  # the image the finding is about (a caption file for orphan captions)
    kind: str  # studio.doctor code
    message: str
    severity: str  # "error", "warning", "info"

    @property
    def fatal(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return self.message


@dataclass
class Report:
    folder: Path
    images: list[Path] = field(default_factory=list)  # every image file, excluded ones too
    captions: dict[Path, str] = field(default_factory=dict)  # whitespace-joined, "" if none
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)  # as trained (EXIF-rotated)
    issues: list[Issue] = field(default_factory=list)
    excluded: frozenset[str] = frozenset()

    def issues_for(self, image: Path) -> list[Issue]:
        return [i for i in self.issues if i.image == image]

    def used(self) -> list[Path]:
        """Images training will use: a format it reads, decoded, no error, not excluded."""
        bad = {i.image for i in self.issues if i.fatal}
        return [p for p in self.images if p.name not in self.excluded and p not in bad
                and p in self.sizes and p.suffix.lower() in IMAGE_EXTENSIONS]

    def blocking(self) -> list[Issue]:
        """Errors on images that are not excluded: the worker refuses to start."""
        images = set(self.images)
        return [i for i in self.issues if i.fatal and i.image in images
                and i.image.name not in self.excluded]


def list_images(folder: Path) -> list[Path]:
    """The image files directly in `folder`, in the doctor's order (before it has run)."""
    from studio import images

    suffixes = set(images.EXTENSIONS) | set(images.UNSUPPORTED_EXTENSIONS)
    try:
        return sorted(p for p in Path(folder).iterdir()
                      if p.suffix.lower() in suffixes and not p.is_dir())
    except OSError:
        return []


def examine(folder: Path, exclude: tuple[str, ...] = (), resolution: int = 512) -> Report:
    from studio import doctor  # numpy, ≈0.2 s: imported on the worker thread, not at start-up

    checked = doctor.check(Path(folder), (), resolution)
    report = Report(Path(folder), list(checked.images), sizes=dict(checked.sizes),
                    excluded=frozenset(exclude))
    report.issues = [Issue(f.path, f.code, f.message, f.severity) for f in checked.findings
                     if f.code != "no_images"]
    for image in report.images:
        text = captions.read(image)
        report.captions[image] = " ".join(text.split()) if text else ""
    return report


def update_caption(report: Report, image: Path, text: str | None) -> None:
    """Bring the report up to date after a caption edit (no re-scan needed)."""
    caption = " ".join(text.split()) if text else ""
    report.captions[image] = caption
    report.issues = [i for i in report.issues if not (i.image == image and i.kind in
                                                      ("caption_missing", "caption_empty"))]
    if text is None:
        report.issues.append(Issue(image, "caption_missing", f"{image.name} has no caption "
                                   f"file: it is trained with the trigger word only", "warning"))
    elif not caption:
        report.issues.append(Issue(image, "caption_empty", f"{image.name}'s caption is empty: "
                                   f"it is trained with the trigger word only", "warning"))


def shows(mode: str, issues: list[Issue], excluded: bool) -> bool:
    """Whether the filter `mode` shows an image with these issues."""
    if mode == "all":
        return True
    if mode == "excluded":
        return excluded
    if mode == "included":
        return not excluded
    if mode == "errors":
        return any(i.fatal for i in issues)
    if mode == "problems":
        return any(i.severity in ("error", "warning") for i in issues)
    return any(i.kind in GROUPS.get(mode, ()) for i in issues)


def caption_style(texts: list[str]) -> str:
    """"tags", "sentences" (the trainer's own rule, caption_augment.detect_style), or "none"."""
    texts = [t for t in texts if t.strip()]
    return detect_style(texts) if texts else "none"


@dataclass(frozen=True)
class Summary:
    total: int
    used: int
    excluded: int
    min_side: int
    median_side: int
    max_side: int
    small: int  # used images below the training resolution
    buckets: dict[str, int]  # "WxH" -> images, as the trainer will bucket them
    caption_style: str
    mean_words: float
    top_tags: list[tuple[str, int]]


def summarize(report: Report, cfg) -> Summary:
    used = report.used()
    sides = sorted(min(report.sizes[p]) for p in used)
    texts = [report.captions.get(p, "") for p in used]
    words = [len(c.split()) for c in texts]
    style = caption_style(texts)
    tag_counts = Counter(t.strip() for c in texts for t in c.split(",") if t.strip())
    small = {i.image for i in report.issues if i.kind == "too_small"}
    return Summary(
        total=len(report.images), used=len(used),
        excluded=sum(1 for p in report.images if p.name in report.excluded),
        min_side=sides[0] if sides else 0,
        median_side=int(statistics.median(sides)) if sides else 0,
        max_side=sides[-1] if sides else 0, small=sum(1 for p in used if p in small),
        buckets=buckets.histogram(plan.bucket_sizes([report.sizes[p] for p in used], cfg)),
        caption_style=style, mean_words=sum(words) / len(words) if words else 0.0,
        top_tags=tag_counts.most_common(8) if style == "tags" else [])


def update_resolution(report: Report, resolution: int) -> None:
    """Redo the doctor's too-small check for a new training resolution (sizes are known)."""
    report.issues = [i for i in report.issues if i.kind != "too_small"]
    for image, (w, h) in report.sizes.items():
        if min(w, h) < resolution:
            report.issues.append(Issue(image, "too_small", f"{image.name} is {w}x{h}: its short "
                                       f"side is under the training resolution {resolution}, so "
                                       f"it is upscaled and looks soft; use a larger version or "
                                       f"exclude it", "warning"))
