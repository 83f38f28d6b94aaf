"""Latents and text embeddings, computed once and kept on disk so a training step runs only the UNet.

Keys are content hashes: the image bytes, the preprocessing (version and resolution) and the
identity of the VAE (weights + config); the caption text and the identity of the tokenizer and
text encoder. A renamed image reuses its entry; an edited image, caption, resolution or model does
not. Later runs of the same project (or of any project sharing the cache folder) reuse them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from studio import atomic
from studio.dataset import PREPROCESS_VERSION, Item, load_square

ENCODE_BATCH = 4


class CacheError(ValueError):
    def __init__(self, message: str, hint: str, path: Path | None = None):
        super().__init__(message)
        self.hint = hint
        self.path = path


@dataclass
class CachedData:
    latent_mean: torch.Tensor  # [N, C, h, w], unscaled VAE posterior mean
    latent_std: torch.Tensor  # [N, C, h, w]
    text: torch.Tensor  # [N, tokens, dim] last hidden state of the text encoder
    encoded_latents: int
    reused_latents: int
    encoded_texts: int
    reused_texts: int


def folder_fingerprint(folder: Path, memo_file: Path) -> str:
    """SHA-256 over a component folder's files, memoised by (path, size, mtime) between runs."""
    memo = {}
    if memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except ValueError:
            memo = {}
    digest = hashlib.sha256()
    changed = False
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            memo[key] = h.hexdigest()
            changed = True
        digest.update(f"{path.relative_to(folder).as_posix()}={memo[key]}\n".encode())
    if changed:
        atomic.write_text(memo_file, json.dumps(memo))
    return digest.hexdigest()


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def _entry(root: Path, kind: str, key: str) -> Path:
    return root / kind / key[:2] / f"{key}.safetensors"


def _to_pixels(items: list[Item], resolution: int) -> torch.Tensor:
    arrays = [np.asarray(load_square(item.image, resolution), dtype=np.float32) for item in items]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return pixels / 127.5 - 1.0  # the VAE expects [-1, 1]


@torch.no_grad()
def build(items: list[Item], captions: list[str], base, resolution: int, cache_dir: Path,
          device: torch.device, on_progress=None) -> CachedData:
    """Encode what is not cached yet; load everything. `on_progress(done, total)` is optional."""
    vae_id = folder_fingerprint(base.folder / "vae", cache_dir / "fingerprints.json")
    text_id = _key(folder_fingerprint(base.folder / "text_encoder", cache_dir / "fingerprints.json"),
                   folder_fingerprint(base.folder / "tokenizer", cache_dir / "fingerprints.json"))
    latent_keys = [_key(it.sha256, PREPROCESS_VERSION, resolution, vae_id) for it in items]
    text_keys = [_key(caption, text_id) for caption in captions]
    todo_lat = [i for i, k in enumerate(latent_keys) if not _entry(cache_dir, "latents", k).is_file()]
    todo_txt = sorted({text_keys[i]: i for i, k in enumerate(text_keys)
                       if not _entry(cache_dir, "text", k).is_file()}.values())
    total, done = len(todo_lat) + len(todo_txt), 0

    if todo_lat:
        base.vae.to(device, dtype=torch.float32)  # fp32: the SDXL VAE overflows in fp16
        for start in range(0, len(todo_lat), ENCODE_BATCH):
            chunk = todo_lat[start:start + ENCODE_BATCH]
            pixels = _to_pixels([items[i] for i in chunk], resolution).to(device)
            dist = base.vae.encode(pixels).latent_dist
            for row, i in enumerate(chunk):
                mean, std = dist.mean[row].float().cpu(), dist.std[row].float().cpu()
                if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
                    raise CacheError(f"Encoding {items[i].image.name} gave non-finite latents.",
                                     "The image may be corrupt, or the VAE is broken; try "
                                     "re-saving the image or another model.", items[i].image)
                _save(_entry(cache_dir, "latents", latent_keys[i]),
                      {"mean": mean.contiguous(), "std": std.contiguous()})
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
        base.vae.to("cpu")

    if todo_txt:
        base.text_encoder.to(device)
        tok = base.tokenizer
        for i in todo_txt:
            ids = tok(captions[i], padding="max_length", max_length=tok.model_max_length,
                      truncation=True, return_tensors="pt").input_ids.to(device)
            hidden = base.text_encoder(ids)[0][0].float().cpu()
            _save(_entry(cache_dir, "text", text_keys[i]), {"hidden": hidden.contiguous()})
            done += 1
            if on_progress:
                on_progress(done, total)
        base.text_encoder.to("cpu")

    latents = [load_file(_entry(cache_dir, "latents", k)) for k in latent_keys]
    texts = [load_file(_entry(cache_dir, "text", k))["hidden"] for k in text_keys]
    return CachedData(
        latent_mean=torch.stack([t["mean"] for t in latents]),
        latent_std=torch.stack([t["std"] for t in latents]),
        text=torch.stack(texts),
        encoded_latents=len(todo_lat), reused_latents=len(items) - len(todo_lat),
        encoded_texts=len(todo_txt), reused_texts=len(set(text_keys)) - len(todo_txt))


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    # Atomic, so a run killed mid-write never leaves a truncated entry that later runs would trust.
    with atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp))

