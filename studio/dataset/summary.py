"""The Dataset tab's view of a scan Report: filters, summary numbers, and keeping the report current
after caption edits and a new resolution without a re-scan. The checking itself is scanner.scan,
the same call the worker makes, so the tab and the worker agree on what trains and what blocks.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from studio.dataset import buckets, captions, plan
from studio.dataset.augment import detect_style
from studio.dataset.report import Finding, Report

# Filter keys offered by the GUI -> the finding codes they show ("problems" = errors + warnings).
GROUPS = {
    "errors": None, "problems": None,
    "duplicates": ("duplicate", "near_duplicate"),
    "captions": ("caption_missing", "caption_empty", "caption_not_utf8", "caption_too_long",
                 "caption_shared", "metadata_line"),
    "too_small": ("too_small",),
}
CAPTION_CODES = GROUPS["captions"]


def list_images(folder: Path, repeats: int = 1) -> list[tuple[Path, str, int]]:
    """(image, name, repeats) of the dataset in training order, before the scan has run: the
    scan's own folder walk (scanner.image_files)."""
    from studio.dataset.scanner import image_files

    return image_files(Path(folder), repeats)


def examine(folder: Path, exclude: tuple[str, ...] = (), resolution: int = 512,
            repeats: int = 1, upscale: bool = False) -> Report:
    """The worker's scan of every image (excluded ones too, so including one back needs no
    re-scan), with `exclude` applied as the worker applies it. Decodes every image: run it off
    the GUI thread."""
    from studio.dataset import scanner  # numpy, ≈0.2 s: imported on the worker thread

    report = scanner.scan(Path(folder), (), repeats, resolution, upscale)
    report.excluded = frozenset(exclude)
    return report


def update_caption(report: Report, image: Path, text: str | None) -> None:
    """Bring the report up to date after a caption edit (no re-scan needed)."""
    caption = captions.as_trained(text) if text else ""
    report.captions[image] = caption
    report.findings = [f for f in report.findings if not (
        f.path == image and f.code in ("caption_missing", "caption_empty", "caption_not_utf8",
                                       "caption_too_long"))]
    if text is None:
        report.add(image, "caption_missing",
                   f"{image.name} has no caption file: {captions.NO_CAPTION}")
    elif not caption:
        report.add(image, "caption_empty",
                   f"{image.name}'s caption is empty: {captions.NO_CAPTION}")
    elif (tokens := captions.estimate_tokens(caption)) > captions.MAX_TOKENS:
        report.add(image, "caption_too_long", f"{image.name}'s caption is about {tokens} "
                   f"text-encoder tokens (an estimate); words after the first "
                   f"{captions.MAX_TOKENS} are ignored", tokens=tokens)


def update_resolution(report: Report, resolution: int, upscale: bool | None = None) -> None:
    """Redo the too-small check for a new training resolution or upscale setting (the sizes
    are known)."""
    from studio.dataset.scanner import too_small_message

    report.resolution = resolution
    report.upscale = report.upscale if upscale is None else upscale
    report.findings = [f for f in report.findings if f.code != "too_small"]
    for image, size in report.sizes.items():
        if min(size) < resolution:
            report.add(image, "too_small", too_small_message(image, size, resolution,
                                                             report.upscale),
                       size=list(size))


def shows(mode: str, findings: list[Finding], excluded: bool) -> bool:
    """Whether the filter `mode` shows an image with these findings."""
    if mode == "all":
        return True
    if mode == "excluded":
        return excluded
    if mode == "included":
        return not excluded
    if mode == "errors":
        return any(f.fatal for f in findings)
    if mode == "problems":
        return any(f.severity in ("error", "warning") for f in findings)
    return any(f.code in GROUPS.get(mode, ()) for f in findings)


# First tags shared by whole datasets that are ordinary words, not a trigger word to invent
# (booru subject tags, medium words and quality tags).
ORDINARY_FIRST_TAGS = frozenset(
    "1girl 1boy 2girls 2boys solo photo image picture painting drawing illustration sketch art "
    "artwork portrait landscape anime manga style masterpiece scenery comic cartoon render "
    "screenshot pixel photograph".split())


def shared_trigger(texts: list[str]) -> str:
    """The made-up word every caption starts with ("zxqstyle, a red circle"), or "". The
    artist's captions already name the trigger; the trainer puts the trigger word first exactly
    once (augment.full_caption), so adopting it changes no caption. Needs 3 captions or more; the
    word is one token of letters and digits (4+ characters), not an ordinary first tag."""
    firsts = {(captions.tags(t) or [""])[0].strip() for t in texts}
    if len(texts) < 3 or len(firsts) != 1:
        return ""
    word = firsts.pop()
    if len(word) < 4 or not word.isalnum() or word.lower() in ORDINARY_FIRST_TAGS:
        return ""
    return word


def caption_style(texts: list[str]) -> str:
    """"tags", "sentences" (the trainer's own rule, augment.detect_style), or "none"."""
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
    folders: dict[str, tuple[int, int]]  # kohya subfolder -> (images used, repeats)
    image_steps: int  # images x repeats per epoch (validation images included)
    shared_trigger: str = ""  # the made-up word every caption starts with (shared_trigger)


def summarize(report: Report, cfg) -> Summary:
    used = report.used()
    sides = sorted(min(report.sizes[p]) for p in used)
    texts = [report.captions.get(p, "") for p in used]
    words = [len(c.split()) for c in texts]
    style = caption_style(texts)
    tag_counts = Counter(t for c in texts for t in captions.tags(c))
    small = {f.path for f in report.findings if f.code == "too_small"}
    per_group = Counter(report.group(p) for p in used)
    return Summary(
        total=len(report.images), used=len(used),
        excluded=sum(1 for p in report.images if report.is_excluded(p)),
        min_side=sides[0] if sides else 0,
        median_side=int(statistics.median(sides)) if sides else 0,
        max_side=sides[-1] if sides else 0, small=sum(1 for p in used if p in small),
        buckets=buckets.histogram(plan.bucket_sizes([report.sizes[p] for p in used], cfg)),
        caption_style=style, mean_words=sum(words) / len(words) if words else 0.0,
        top_tags=tag_counts.most_common(8) if style == "tags" else [],
        folders={g: (per_group[g], t) for g, t in report.folders.items()},
        image_steps=sum(report.repeats_of(p) for p in used), shared_trigger=shared_trigger(texts))
