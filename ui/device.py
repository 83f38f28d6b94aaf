"""What the window says about the machine it trains on: an NVIDIA GPU or the CPU, asked once of
studio.machine.install_plan.query_gpus (the check the installer makes), so texts fit the device; and the
cards the memory planner can predict for (this machine's GPU, or a size the artist picks)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass

GIB = 1024**3
# Common card sizes, for a machine without an NVIDIA GPU (planning for the GPU the artist will
# train on) or for comparing: GTX 1060 6 GB, RTX 3060 Ti / 4060 8 GB, 3060 12 GB, 4080 16 GB,
# 3090/4090 24 GB.
CARD_SIZES_GB = (6, 8, 12, 16, 24)
DEFAULT_CARD_GB = 8


@dataclass(frozen=True)
class Card:
    name: str  # what the artist reads: "NVIDIA GeForce RTX 3060 (12 GB)" or "an 8 GB card"
    memory_bytes: int
    detected: bool = False  # this machine's GPU

    @property
    def key(self) -> str:
        """How the choice is remembered (studio.settings.AppSettings.planner_gpu)."""
        return "detected" if self.detected else f"{self.memory_bytes / GIB:g}"


@functools.cache
def has_gpu() -> bool:
    """True when nvidia-smi lists a GPU. Cached: nvidia-smi takes ~0.1 s, and absent it
    returns at once (shutil.which)."""
    from studio.machine.install_plan import query_gpus

    return bool(query_gpus())


def name() -> str:
    """"the GPU" or "the CPU", for sentences."""
    return "the GPU" if has_gpu() else "the CPU"


@functools.cache
def gpus() -> tuple[Card, ...]:
    """This machine's NVIDIA GPUs with their memory (query_gpus finds them; nvidia-smi's
    `memory.total`, in MiB, sizes them). Empty without a driver; never raises."""
    from studio.machine.install_plan import query_gpus

    found = query_gpus()
    exe = shutil.which("nvidia-smi")
    if not found or exe is None:
        return ()
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    sizes = [int(line.strip()) * 2**20 for line in out.splitlines() if line.strip().isdigit()]
    return tuple(Card(f"{gpu.name} ({size / GIB:.0f} GB)", size, True)
                 for gpu, size in zip(found, sizes))


def cards() -> list[Card]:
    """The choices of the Train tab's card box: this machine's GPU first, then common sizes."""
    return [*gpus(), *(Card(f"{'an' if gb == 8 else 'a'} {gb} GB card", gb * GIB)
                       for gb in CARD_SIZES_GB)]


def card_for(key: str) -> Card:
    """The remembered choice, else this machine's GPU, else an 8 GB card."""
    choices = cards()
    for card in choices:
        if card.key == key:
            return card
    return choices[0] if gpus() else next(c for c in choices
                                          if c.memory_bytes == DEFAULT_CARD_GB * GIB)
