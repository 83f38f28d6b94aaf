"""What a run will do before it runs: buckets, held-out images, steps. One place, used by the
trainer, `python -m training check` and the GUI, so their numbers always agree."""

from __future__ import annotations

import math
import random
from collections import Counter

from studio.dataset import buckets
from studio.config import TrainConfig


def bucket_spec(cfg: TrainConfig) -> buckets.BucketSpec:
    # The side limits never exclude the target resolution itself (a 64 px pocket model must not
    # need its own bucket limits).
    return buckets.BucketSpec(resolution=cfg.resolution, step=cfg.bucket_step,
                              min_side=min(cfg.min_bucket_side, cfg.resolution),
                              max_side=max(cfg.max_bucket_side, cfg.resolution),
                              upscale=cfg.upscale_small_images)


def bucket_sizes(sizes: list[tuple[int, int]], cfg: TrainConfig) -> list[tuple[int, int]]:
    """The (width, height) each image of these sizes trains at."""
    if not cfg.enable_buckets:
        side = cfg.resolution // 8 * 8
        return [(side, side)] * len(sizes)
    spec = bucket_spec(cfg)
    table = buckets.resolutions(spec)
    return [buckets.assign(size, spec, table) for size in sizes]


def validation_count(cfg: TrainConfig, n_images: int) -> int:
    """Images held out for the validation loss: -1 means 5% (at least 2) from 20 images up."""
    n = cfg.validation_images
    if n < 0:
        n = max(2, round(0.05 * n_images)) if n_images >= 20 else 0
    return max(0, min(n, n_images - 1))


def held_out(cfg: TrainConfig, n_images: int) -> set[int]:
    """Indices of the validation images, chosen by the seed."""
    n = validation_count(cfg, n_images)
    return set(random.Random(cfg.seed).sample(range(n_images), n)) if n else set()


def batches_per_epoch(sizes: list[tuple[int, int]], repeats: list[int], batch_size: int) -> int:
    """Batches in one epoch: each image `repeats` times, a batch never mixes buckets."""
    per_bucket: Counter = Counter()
    for size, times in zip(sizes, repeats):
        per_bucket[size] += times
    return sum(math.ceil(n / batch_size) for n in per_bucket.values())


def steps(sizes: list[tuple[int, int]], repeats: list[int], cfg: TrainConfig,
          world: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps) for training images of these bucket sizes."""
    per_rank = max(1, batches_per_epoch(sizes, repeats, cfg.batch_size) // world)
    per_epoch = max(1, math.ceil(per_rank / cfg.gradient_accumulation_steps))
    return per_epoch, cfg.max_steps or cfg.epochs * per_epoch


def split(items: list, cfg: TrainConfig) -> tuple[list, list]:
    """(training items, held-out validation items) of a dataset's Items, chosen by the seed."""
    held = held_out(cfg, len(items))
    return ([it for i, it in enumerate(items) if i not in held],
            [it for i, it in enumerate(items) if i in held])


def item_steps(items: list, cfg: TrainConfig, world: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps) for a dataset's Items (scan order), as the
    worker plans them: minus the held-out images, each image its folder's repeats, batches
    within one aspect bucket. The Train tab, `check` and the trainer all come here."""
    train, _ = split(items, cfg)
    return steps(bucket_sizes([it.size for it in train], cfg), [it.repeats for it in train],
                 cfg, world)
