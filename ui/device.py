"""What the window says about the machine it trains on: an NVIDIA GPU or the CPU, asked once of
studio.install_plan.query_gpus (the check the installer makes), so texts fit the device."""

from __future__ import annotations

import functools


@functools.cache
def has_gpu() -> bool:
    """True when nvidia-smi lists a GPU. Cached: nvidia-smi takes ~0.1 s, and absent it
    returns at once (shutil.which)."""
    from studio.install_plan import query_gpus

    return bool(query_gpus())


def name() -> str:
    """"the GPU" or "the CPU", for sentences."""
    return "the GPU" if has_gpu() else "the CPU"
