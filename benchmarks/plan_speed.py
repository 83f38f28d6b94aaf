"""How long the GPU memory planner takes for full-size models: a first plan, a second plan that
changes only the batch, and "Fit to my GPU" for a card (wall seconds, one process, no disk cache).

    PYTHONPATH=. .venv/bin/python benchmarks/plan_speed.py sd15:512:4 sdxl:1024:8

Each argument is MODEL:PX:CARD_GB (MODEL: a short name training.memory_plan.resolve_model
knows). Settings: bf16, rank 16, attention layers, AdamW, batch 4, caption dropout (text
encoders on the card), samples at the training size; the fit may use every quantization.
Run it against another checkout (PYTHONPATH) to compare before and after.
"""

from __future__ import annotations

import sys
import time

T0 = time.perf_counter()

import torch  # noqa: E402,F401

from studio.machine.memory_fit import GIB, MemorySettings, fit, needed_bytes  # noqa: E402
from training.memory_plan import predict, resolve_model  # noqa: E402


def main(argv: list[str]) -> int:
    print(f"imports {time.perf_counter() - T0:.1f} s", flush=True)
    for arg in argv or ["sd15:512:4", "sdxl:1024:8"]:
        name, px, gb = arg.split(":")
        px, card = int(px), int(float(gb) * GIB)
        s = MemorySettings(model=str(resolve_model(name)), width=px, height=px, rank=16,
                           batch_size=4, live_text=True, sample_size=px,
                           encode_batch=1 if px * px > 768 * 768 else 4)
        t = time.perf_counter()
        p = predict(s)
        first = time.perf_counter() - t
        t = time.perf_counter()
        predict(s.replace(batch_size=2))
        second = time.perf_counter() - t
        t = time.perf_counter()
        found = fit(s, card, predict)
        fitting = time.perf_counter() - t
        print(f"{name} {px} px: first plan {first:.1f} s (peak {p.peak_bytes / GIB:.2f} GiB, "
              f"{p.limit}), batch 2 plan {second:.1f} s, fit {gb} GB {fitting:.1f} s "
              f"({found.tried} plans; {'fits with ' + str(found.changes) if found.ok else 'nothing fits'}"
              f"{', needs %.2f GiB' % (needed_bytes(found.plan) / GIB) if found.plan else ''})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
