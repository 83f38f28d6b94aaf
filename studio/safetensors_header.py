"""Bounded safetensors header reading and the LoRA hashes A1111/kohya/Civitai use (no torch)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# A real LoRA header is a few KB (up to ~1 MB with a thumbnail); safetensors itself caps it at
# 100 MB. Bounding it means a corrupt length field can't make us allocate gigabytes.
MAX_HEADER_BYTES = 100 * 1024 * 1024
CHUNK = 1024 * 1024
# lora-formats.md §7.2: the "legacy"/AutoV1 hash covers 64 KiB at offset 1 MiB of the whole file.
LEGACY_OFFSET, LEGACY_LENGTH = 0x100000, 0x10000

Source = str | os.PathLike | BinaryIO  # a path, or a seekable binary file such as io.BytesIO


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[tuple[BinaryIO, str]]:
    """A binary handle on a path, or on an already open seekable file (e.g. io.BytesIO)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            yield fh, str(source)
    else:
        source.seek(0)
        yield source, getattr(source, "name", "<in-memory safetensors>")


def _size(fh: BinaryIO) -> int:
    here = fh.tell()
    size = fh.seek(0, os.SEEK_END)
    fh.seek(here)
    return size


def _header_length(fh: BinaryIO, name: str, max_header_bytes: int) -> tuple[int, int]:
    """(header length, file size) after checking the 8-byte length prefix against both bounds."""
    size = _size(fh)
    fh.seek(0)
    prefix = fh.read(8)
    if len(prefix) < 8:
        raise ValueError(f"{name}: not a safetensors file ({size} bytes, shorter than the "
                         f"8-byte header length)")
    length = int.from_bytes(prefix, "little")
    if length > max_header_bytes:
        raise ValueError(f"{name}: not a safetensors file (header length field says {length} "
                         f"bytes, more than the {max_header_bytes}-byte limit)")
    if 8 + length > size:
        raise ValueError(f"{name}: truncated safetensors file (header needs {8 + length} bytes, "
                         f"file has {size})")
    return length, size


def read_header(source: Source, max_header_bytes: int = MAX_HEADER_BYTES
                ) -> tuple[dict[str, dict], dict[str, str]]:
    """(tensor table, `__metadata__`) of a safetensors file, reading only its header.

    Raises ValueError naming the file when it is too short, the length field exceeds the bound
    or the file, the header isn't a JSON object, or a tensor's data lies past the end.
    """
    with _opened(source) as (fh, name):
        length, size = _header_length(fh, name, max_header_bytes)
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{name}: safetensors header is a JSON {type(header).__name__}, "
                         f"not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{name}: safetensors __metadata__ must map text to text")
    data_size = size - 8 - length
    for key, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"{name}: tensor {key!r} has no valid data_offsets")
        if offsets[1] > data_size:
            raise ValueError(f"{name}: truncated safetensors file (tensor {key!r} ends at byte "
                             f"{offsets[1]} of a {data_size}-byte data section)")
    return header, metadata


def data_section_sha256(source: Source) -> str:
    """SHA-256 of the bytes after the header: kohya's `sshs_model_hash`, Civitai's AutoV3 (full).

    Same as A1111/Forge `hashes.addnet_hash_safetensors` (lora-formats.md §7.2); unchanged when
    only the metadata changes, unlike whole-file hashes.
    """
    digest = hashlib.sha256()
    with _opened(source) as (fh, name):
        length, _ = _header_length(fh, name, MAX_HEADER_BYTES)
        fh.seek(8 + length)
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def legacy_hash(source: Source) -> str:
    """kohya `sshs_legacy_hash` / A1111 AutoV1: sha256(file[1 MiB : 1 MiB + 64 KiB])[:8].

    Files under 1 MiB hash the empty string (`e3b0c442`), as in A1111 (lora-formats.md §7.2).
    """
    with _opened(source) as (fh, _):
        fh.seek(LEGACY_OFFSET)
        return hashlib.sha256(fh.read(LEGACY_LENGTH)).hexdigest()[:8]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Whole-file SHA-256 (Civitai "SHA256"; AutoV2 is its first 10 hex digits)."""
    digest = hashlib.sha256()
    with open(Path(path), "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
