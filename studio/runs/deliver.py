"""Copy a finished LoRA into the folders other apps read (ComfyUI, A1111/Forge), atomically.

A half-copied file in ComfyUI's models/loras would show up in its list and fail to load, so
each file is copied to a temporary name in the destination and renamed into place. A copy from
a run with a report card carries the recommended epoch in its header (report_card.RECOMMENDED_KEY,
a kohya-style `ss_` key): only the header is rewritten, the tensor bytes are copied unchanged
(so the data-section hashes A1111 and Civitai compute stay the same).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from studio import atomic
from studio.runs import report_card
from studio.safetensors_header import read_header

# Where the common apps keep LoRAs, relative to the folder the artist might pick (the app's root).
KNOWN_SUBFOLDERS = ("models/loras", "models/Lora", "ComfyUI/models/loras",
                    "stable-diffusion-webui/models/Lora")


def lora_folder_for(chosen: Path) -> Path:
    """The LoRA folder inside an app's root folder (ComfyUI, A1111) the artist picked; else
    `chosen` itself."""
    for sub in KNOWN_SUBFOLDERS:
        candidate = Path(chosen) / sub
        if candidate.is_dir():
            return candidate
    return Path(chosen)


def companions(adapter: Path) -> list[Path]:
    """The LoRA and the files that travel with it (A1111's .json sidecar, a preview image)."""
    out = [adapter]
    for suffix in (".json", ".preview.png"):
        extra = adapter.with_name(adapter.stem + suffix)
        if extra.is_file():
            out.append(extra)
    return out


def conflicts(adapter: Path, folder: Path) -> list[Path]:
    return [Path(folder) / f.name for f in companions(adapter) if (Path(folder) / f.name).exists()]


def run_metadata(adapter: Path) -> dict[str, str]:
    """The header keys a copy of this LoRA file gains from its run (RUN/x.safetensors or
    RUN/loras/x.safetensors): the report card's recommended epoch, when it has one."""
    for run in (adapter.parent, adapter.parent.parent):
        if (run / "config.toml").is_file():
            card = report_card.load(run)
            return card.metadata if card else {}
    return {}


def _copy_with_metadata(source: Path, target: Path, extra: dict[str, str]) -> None:
    """`source` to `target` with `extra` merged into the header's __metadata__; the data section
    byte for byte. The header is padded with spaces to 8 bytes, as safetensors writes it."""
    header, metadata = read_header(source)
    header["__metadata__"] = {**metadata, **extra}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(source, "rb") as src, open(target, "wb") as dst:
        (length,) = struct.unpack("<Q", src.read(8))
        src.seek(8 + length)
        dst.write(struct.pack("<Q", len(raw)))
        dst.write(raw)
        shutil.copyfileobj(src, dst)


def copy_lora(adapter: Path, folder: Path) -> list[Path]:
    """Copy the LoRA (and companions) into `folder`, replacing same-named files; the copies."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    extra = run_metadata(Path(adapter).resolve())
    for source in companions(Path(adapter)):
        target = folder / source.name
        with atomic.atomic_path(target) as tmp:
            if extra and source.suffix == ".safetensors":
                _copy_with_metadata(source, tmp, extra)
            else:
                shutil.copyfile(source, tmp)
        copies.append(target)
    return copies
