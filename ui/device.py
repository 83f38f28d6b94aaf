"""What the window says about the machine it trains on: an NVIDIA GPU or the CPU, asked once of
studio.machine.install_plan.query_gpus (the check the installer makes), so texts fit the device; and the
cards the memory planner can predict for (this machine's GPU, or a size the artist picks)."""

from __future__ import annotations

import functools
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
    """This machine's NVIDIA GPUs with their memory, from the installer's one nvidia-smi query
    (query_gpus). Empty without a driver; never raises."""
    from studio.machine.install_plan import query_gpus

    return tuple(Card(f"{gpu.name} ({gpu.memory_mib * 2**20 / GIB:.0f} GB)",
                      gpu.memory_mib * 2**20, True) for gpu in query_gpus() if gpu.memory_mib)


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
