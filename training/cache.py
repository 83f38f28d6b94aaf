"""Latents and text embeddings, computed once and kept on disk so a training step runs only the UNet.

Keys are content hashes: the image bytes, the preprocessing (version, bucket size, flip) and the
identity of the VAE (weights + config); the caption text and the identity of the tokenizer and
text encoder. A renamed image reuses its entry; an edited image, caption, size or model does not.
Later runs of the same project reuse them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file

from studio import atomic
from studio.dataset.images import open_rgb
from studio.dataset.report import Item
from studio.errors import UserError
from studio.machine import memory_fit


def encode_batch(size: tuple[int, int]) -> int:
    """How many images of `size` (width, height) one VAE encode call takes: the rule the memory
    planner counts with (studio.machine.memory_fit.encode_batch, one image at a time above
    768² px)."""
    return memory_fit.encode_batch(*size)


# Part of the latent cache keys: bump it whenever load_fitted changes.
PREPROCESS_VERSION = "open_rgb-fit-lanczos-v2"


def load_fitted(path: Path, size: tuple[int, int]) -> Image.Image:
    """The image as trained: normalised by open_rgb (EXIF, transparency, 16-bit, CMYK, ICC),
    resized to cover `size` (width, height) and centre-cropped to it."""
    image, _ = open_rgb(path)
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)


class CacheError(UserError):
    def __init__(self, message: str, hint: str, path: Path | None = None):
        super().__init__(message, hint, str(path or ""))
        self.path = path


@dataclass
class Counts:
    encoded: int = 0
    reused: int = 0


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


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    # Atomic, so a run killed mid-write never leaves a truncated entry that later runs would trust.
    with atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def _to_pixels(items: list[Item], size: tuple[int, int], flip: bool) -> torch.Tensor:
    images = [load_fitted(item.image, size) for item in items]
    if flip:
        images = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images]
    pixels = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]))
    return pixels.permute(0, 3, 1, 2) / 127.5 - 1.0  # the VAE expects [-1, 1]


@torch.no_grad()
def latents(items: list[Item], sizes: list[tuple[int, int]], flips: bool, base, cache_dir: Path,
            device: torch.device, on_progress=None) -> tuple[list[dict], Counts]:
    """Per item {"mean", "std"} (plus "mean_flip", "std_flip" with `flips`): the VAE posterior at
    the item's bucket size. Entries not on disk yet are encoded, images of one size together."""
    vae_id = folder_fingerprint(base.folder / "vae", cache_dir / "fingerprints.json")
    variants = (False, True) if flips else (False,)
    keys = {(i, f): _key(it.sha256, PREPROCESS_VERSION, sizes[i], f, vae_id)
            for i, it in enumerate(items) for f in variants}
    todo = [(i, f) for (i, f), k in keys.items() if not _entry(cache_dir, "latents", k).is_file()]
    if todo:
        base.vae.to(device, dtype=torch.float32)  # fp32: the SDXL VAE overflows in fp16
        groups: dict[tuple, list[int]] = {}
        for i, f in todo:
            groups.setdefault((sizes[i], f), []).append(i)
        done = 0
        for (size, flip), members in groups.items():
            per_call = encode_batch(size)
            for start in range(0, len(members), per_call):
                chunk = members[start:start + per_call]
                dist = base.vae.encode(
                    _to_pixels([items[i] for i in chunk], size, flip).to(device)).latent_dist
                for row, i in enumerate(chunk):
                    mean, std = dist.mean[row].float().cpu(), dist.std[row].float().cpu()
                    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
                        raise CacheError(f"Encoding {items[i].image.name} gave non-finite "
                                         f"latents.", "The image may be corrupt, or the VAE is "
                                         "broken; try re-saving the image or another model.",
                                         items[i].image)
                    _save(_entry(cache_dir, "latents", keys[i, flip]),
                          {"mean": mean.contiguous(), "std": std.contiguous()})
                done += len(chunk)
                if on_progress:
                    on_progress(done, len(todo))
        base.vae.to("cpu")
    out = []
    for i in range(len(items)):
        entry = load_file(_entry(cache_dir, "latents", keys[i, False]))
        if flips:
            flipped = load_file(_entry(cache_dir, "latents", keys[i, True]))
            entry.update(mean_flip=flipped["mean"], std_flip=flipped["std"])
        out.append(entry)
    return out, Counts(encoded=len(todo), reused=len(keys) - len(todo))


def _ids(tokenizer, captions: list[str], device: torch.device) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(device)


def encode_text(base, captions: list[str], device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states [N, tokens, dim] the UNet cross-attends to, pooled [N, dim] or None).

    SD1/SD2: the text encoder's last hidden state (what their pipelines use). SDXL (Podell et
    al. 2023, §2.1): the penultimate hidden states of both encoders, concatenated, plus the
    second encoder's pooled projection. Gradients flow only when the text encoders train.
    """
    if base.text_encoder_2 is None:
        return base.text_encoder(_ids(base.tokenizer, captions, device))[0].float(), None
    first = base.text_encoder(_ids(base.tokenizer, captions, device), output_hidden_states=True)
    second = base.text_encoder_2(_ids(base.tokenizer_2, captions, device),
                                 output_hidden_states=True)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    return hidden.float(), second.text_embeds.float()


@torch.no_grad()
def texts(captions: list[str], base, cache_dir: Path, device: torch.device
          ) -> tuple[torch.Tensor, torch.Tensor | None, Counts]:
    """Text embeddings (and SDXL pooled embeddings) for fixed captions, cached by caption text
    and the identity of every tokenizer and text encoder."""
    memo = cache_dir / "fingerprints.json"
    parts = [folder_fingerprint(base.folder / sub, memo) for sub in
             ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
             if (base.folder / sub).is_dir()]
    text_id = _key(*parts)
    keys = [_key(caption, text_id) for caption in captions]
    todo = sorted({k: i for i, k in enumerate(keys)
                   if not _entry(cache_dir, "text", k).is_file()}.values())
    if todo:
        for encoder in base.text_encoders:
            encoder.to(device)
        for i in todo:
            hidden, pooled = encode_text(base, [captions[i]], device)
            entry = {"hidden": hidden[0].cpu().contiguous()}
            if pooled is not None:
                entry["pooled"] = pooled[0].cpu().contiguous()
            _save(_entry(cache_dir, "text", keys[i]), entry)
    entries = [load_file(_entry(cache_dir, "text", k)) for k in keys]
    pooled = torch.stack([e["pooled"] for e in entries]) if "pooled" in entries[0] else None
    return (torch.stack([e["hidden"] for e in entries]), pooled,
            Counts(encoded=len(todo), reused=len(set(keys)) - len(todo)))
