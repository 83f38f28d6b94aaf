"""The images of a run, ready for steps: bucketed cached latents, captions per step, batches."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from studio.dataset import buckets, plan
from studio.dataset.augment import CaptionRules, augment, detect_style, full_caption
from studio.config import CaptionStyle, TrainConfig
from studio.dataset.report import Item
from training import cache
from training.loss import Posterior


def split_validation(items: list[Item], cfg: TrainConfig) -> tuple[list[Item], list[Item]]:
    """(training items, held-out validation items), chosen by the seed."""
    held = plan.held_out(cfg, len(items))
    return ([it for i, it in enumerate(items) if i not in held],
            [it for i, it in enumerate(items) if i in held])


class TrainingData:
    def __init__(self, items: list[Item], cfg: TrainConfig, base, cache_dir: Path,
                 device: torch.device, on_progress=None, augment_captions: bool = True,
                 train_text: bool = False):
        self.items = items
        self.base = base
        self.device = device
        self.sizes = plan.bucket_sizes([it.size for it in items], cfg)
        self.flips = cfg.flip_horizontal and augment_captions
        self.latents, self.latent_counts = cache.latents(items, self.sizes, self.flips, base,
                                                         cache_dir, device, on_progress)
        self.rules = CaptionRules(cfg.trigger_word, cfg.shuffle_tags, cfg.keep_tags,
                                  cfg.tag_dropout, cfg.caption_dropout)
        self.style = cfg.caption_style.value if cfg.caption_style != CaptionStyle.auto \
            else detect_style([it.caption for it in items])
        self.captions = [full_caption(it.caption, cfg.trigger_word) for it in items]
        # Captions that change per step can't use cached embeddings: the (frozen) text encoder
        # then runs each step, as kohya does when caption shuffling is on.
        # Training the text encoders also means encoding every step (with gradients).
        self.train_text = train_text
        self.live_text = (augment_captions and self.rules.varies) or train_text
        # Where the text encoders then live is decided once for all sets (place_text_encoders).
        self.pooled = None
        if self.live_text:
            self.text, self.text_counts = None, cache.Counts()
        else:
            self.text, self.pooled, self.text_counts = cache.texts(self.captions, base,
                                                                   cache_dir, device)
        # SDXL's micro-conditioning (Podell et al. 2023, §2.2): original size, crop offset and
        # target size of every image, so the model learns not to draw the crop.
        self.time_ids = torch.tensor([sdxl_time_ids(it.size, size) for it, size in
                                      zip(items, self.sizes)]) if base.is_sdxl else None
        if device.type != "cpu":
            # A few MB for a whole dataset: keep it on the GPU so a step never waits for a
            # host-to-device copy (issue 9). Random draws still come from the CPU generator
            # (one copy per micro-batch: loss.train_step).
            self.latents = [{k: v.to(device) for k, v in e.items()} for e in self.latents]
            self.text, self.pooled, self.time_ids = (
                None if t is None else t.to(device)
                for t in (self.text, self.pooled, self.time_ids))

    def histogram(self) -> dict[str, int]:
        return buckets.histogram(self.sizes)

    def epoch_batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0,
                      world: int = 1) -> list[list[int]]:
        """One epoch's batches for this rank: each image `repeats` times, every batch from one
        bucket (same shape), batch order shuffled by (seed, epoch)."""
        rng = random.Random(seed * 1_000_003 + epoch)
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(self.items):
            by_bucket.setdefault(self.sizes[i], []).extend([i] * item.repeats)
        batches = []
        for size in sorted(by_bucket):
            members = by_bucket[size]
            rng.shuffle(members)
            batches += [members[k:k + batch_size] for k in range(0, len(members), batch_size)]
        rng.shuffle(batches)
        per_rank = max(1, len(batches) // world)
        if len(batches) < world:  # tiny datasets on many GPUs: every rank still gets a batch
            batches = (batches * world)[:world]
        return batches[rank::world][:per_rank]

    def steps(self, cfg: TrainConfig, world: int) -> tuple[int, int]:
        """(steps per epoch, total steps), as `check` and the GUI predict them."""
        return plan.steps(self.sizes, [it.repeats for it in self.items], cfg, world)

    def batch(self, indices: list[int], gen: torch.Generator, rng: random.Random
              ) -> tuple[Posterior, torch.Tensor, dict | None]:
        """(the cached VAE posterior, unscaled: train_step samples it; text embeddings; the
        UNet's added conditioning for SDXL, else None) for a batch. Rows are gathered with
        torch.stack of views: indexing a GPU tensor with a Python list first copies the list to
        the GPU, a host-to-device copy that waits for the stream."""
        means, stds = [], []
        for i in indices:
            flip = self.flips and rng.random() < 0.5
            entry = self.latents[i]
            means.append(entry["mean_flip" if flip else "mean"])
            stds.append(entry["std_flip" if flip else "std"])
        posterior = Posterior(torch.stack(means), torch.stack(stds))
        if self.live_text:
            captions = [augment(self.items[i].caption, self.rules, self.style, rng)
                        for i in indices]
            with torch.set_grad_enabled(self.train_text):
                text, pooled = cache.encode_text(self.base, captions, self.device)
        else:
            text, pooled = rows(self.text, indices), rows(self.pooled, indices)
        added = None if pooled is None else {"text_embeds": pooled,
                                             "time_ids": rows(self.time_ids, indices)}
        return posterior, text, added


def rows(tensor: torch.Tensor | None, indices: list[int]) -> torch.Tensor | None:
    return None if tensor is None else torch.stack([tensor[i] for i in indices])


def build(items: list[Item], held_out: list[Item], cfg: TrainConfig, base, cache_dir: Path,
          device: torch.device, on_progress=None, train_text: bool = False
          ) -> tuple[TrainingData, TrainingData | None]:
    """The training set, the validation set (None without held-out images), and then the text
    encoders placed once for both (place_text_encoders)."""
    data = TrainingData(items, cfg, base, cache_dir, device, on_progress, train_text=train_text)
    val = TrainingData(held_out, cfg, base, cache_dir, device, augment_captions=False) \
        if held_out else None
    place_text_encoders(base, device, data, val)
    return data, val


def live_text(*sets: TrainingData | None) -> bool:
    """Whether any set encodes its captions every step (so the text encoders stay on the
    device): the rule place_text_encoders and train.py's sample prompts both follow."""
    return any(s is not None and s.live_text for s in sets)


def place_text_encoders(base, device: torch.device, *sets: TrainingData | None) -> None:
    """On `device` when a set encodes captions every step (caption dropout, shuffling, tag
    dropout, or training the encoders), else on the CPU where they free GPU memory. Decided after
    every set exists: placed per set, the validation set (built second, with cached text) moved
    them back to the CPU under a training set that encodes on the GPU, and step 1 failed with
    "Expected all tensors to be on the same device" (issue 17)."""
    for encoder in base.text_encoders:
        encoder.to(device if live_text(*sets) else "cpu")


def sdxl_time_ids(size: tuple[int, int], bucket: tuple[int, int]) -> list[float]:
    """(original h, w, crop top, left, target h, w) for an image of `size` centre-cropped into
    `bucket` (load_fitted's geometry; crop offsets in resized pixels, as diffusers' SDXL
    example computes them)."""
    (w, h), (bw, bh) = size, bucket
    scale = max(bw / w, bh / h)
    top, left = round((h * scale - bh) / 2), round((w * scale - bw) / 2)
    return [float(h), float(w), float(top), float(left), float(bh), float(bw)]
