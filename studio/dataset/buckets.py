"""Aspect-ratio buckets: each image trains at the bucket closest to its shape, at about the target area.

Following kohya's bucketing (sd-scripts `library/model_util.py` `make_bucket_resolutions`, and
NovelAI's "aspect ratio bucketing" write-up): sides are multiples of `step`, the area stays at or
under resolution², and by default an image is never upscaled into a bigger bucket than itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketSpec:
    resolution: int
    step: int = 64
    min_side: int = 256
    max_side: int = 1024
    upscale: bool = False


def resolutions(spec: BucketSpec) -> list[tuple[int, int]]:
    """All (width, height) buckets with area ≤ resolution², sides in [min, max], multiples of step."""
    area = spec.resolution ** 2
    out = set()
    w = spec.min_side
    while w <= spec.max_side:
        h = min(spec.max_side, (area // w) // spec.step * spec.step)
        if h >= spec.min_side:
            out.add((w, h))
            out.add((h, w))
        w += spec.step
    side = spec.resolution // spec.step * spec.step
    out.add((side, side))
    return sorted(out)


def assign(size: tuple[int, int], spec: BucketSpec,
           buckets: list[tuple[int, int]] | None = None) -> tuple[int, int]:
    """The bucket for an image of `size` (width, height, after EXIF rotation)."""
    w, h = size
    buckets = buckets or resolutions(spec)
    ratio = w / h
    best = min(buckets, key=lambda b: (abs(b[0] / b[1] - ratio), -b[0] * b[1]))
    if spec.upscale or w * h >= best[0] * best[1]:
        return best
    # Too small for its bucket: shrink the bucket to fit the image, keeping the aspect ratio,
    # rather than upscaling (blurry training data teaches blur).
    scale = (w * h / (best[0] * best[1])) ** 0.5
    bw = max(spec.step, int(best[0] * scale) // spec.step * spec.step)
    bh = max(spec.step, int(best[1] * scale) // spec.step * spec.step)
    return bw, bh


def histogram(assigned: list[tuple[int, int]]) -> dict[str, int]:
    """'WxH' -> image count, largest buckets first (shown before training)."""
    return {f"{w}x{h}": n for (w, h), n in Counter(assigned).most_common()}
