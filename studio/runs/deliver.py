"""Copy a finished LoRA into the folders other apps read (ComfyUI, A1111/Forge), atomically.

A half-copied file in ComfyUI's models/loras would show up in its list and fail to load, so
each file is copied to a temporary name in the destination and renamed into place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from studio import atomic

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


def copy_lora(adapter: Path, folder: Path) -> list[Path]:
    """Copy the LoRA (and companions) into `folder`, replacing same-named files; the copies."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in companions(Path(adapter)):
        target = folder / source.name
        with atomic.atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        copies.append(target)
    return copies
