"""`python -m training` with faults injected and steps recorded, for tests of what no tiny model
does by itself (a NaN on one rank, a failing sample, a GPU out of memory). Run as a script, also
under `torchrun`; the faults come from the LORA_STUDIO_FAULTS environment variable (JSON):

- record: a folder; each rank appends {"lr", "draw"} per micro-batch to rank<N>.jsonl (the
  learning rate the next update uses, and the first values its noise draws start with)
- nan: {"rank": R, "call": K}: rank R's K-th micro-batch (1-based) gets NaN latents
- fail: "sample" | "validation": that raises RuntimeError
- oom: "caching" | "text" | "sample" | "validation": that raises torch.cuda.OutOfMemoryError
- gpu: a GPU name nvidia-smi reports (while torch sees no CUDA)
- spill: {"after": K, "seconds": S, "free": F, "total": T, "reserved": R}: steps after the K-th
  micro-batch take S seconds longer, the step watchdog runs on the CPU too, and the GPU memory it
  reads is F free of T bytes, R reserved (the memory full, as when a card spills)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from training import __main__ as worker, cache, loss, sampling, train, watchdog  # noqa: E402

FAULTS = json.loads(os.environ.get("LORA_STUDIO_FAULTS", "{}"))
RANK = int(os.environ.get("RANK", "0"))
OPTIMIZERS: list = []
CALLS = [0]


def raising(kind: str, error: type[BaseException]):
    def fail(*args, **kwargs):
        raise error(f"injected failure in {kind}")
    return fail


def install() -> None:
    if FAULTS.get("gpu"):
        from studio.machine import install_plan

        gpu = install_plan.Gpu(FAULTS["gpu"], (470, 82), (6, 1))
        install_plan.query_gpus = lambda: [gpu]
    build_optimizer, train_step = train.build_optimizer, train.train_step

    def recording_optimizer(*args, **kwargs):
        OPTIMIZERS.append(build_optimizer(*args, **kwargs))
        return OPTIMIZERS[-1]

    def faulty_step(accelerator, unet, batch, scheduler, prediction, scale, gen, *rest):
        CALLS[0] += 1
        if FAULTS.get("record"):
            probe = torch.Generator()
            probe.set_state(gen.get_state())
            line = {"lr": [g["lr"] for g in OPTIMIZERS[-1].param_groups],
                    "draw": torch.randn(4, generator=probe).tolist()}
            with open(Path(FAULTS["record"]) / f"rank{RANK}.jsonl", "a") as fh:
                fh.write(json.dumps(line) + "\n")
        nan = FAULTS.get("nan")
        if nan and nan["rank"] == RANK and nan["call"] == CALLS[0]:
            latents, text, added = batch
            latents = latents * float("nan") if torch.is_tensor(latents) else \
                loss.Posterior(latents.mean * float("nan"), latents.std)
            batch = (latents, text, added)
        if (spill := FAULTS.get("spill")) and CALLS[0] > spill["after"]:
            time.sleep(spill["seconds"])
        return train_step(accelerator, unet, batch, scheduler, prediction, scale, gen, *rest)

    train.build_optimizer, train.train_step = recording_optimizer, faulty_step
    if spill := FAULTS.get("spill"):
        reading = watchdog.MemoryReading(spill["reserved"], spill["free"], spill["total"])
        train.cuda_memory = lambda device=None: reading
        train.StepWatchdog = lambda enabled, **kw: watchdog.StepWatchdog(True, **kw)
    places = {"caching": (cache, "latents"), "text": (cache, "encode_text"),
              "sample": (sampling, "render"), "validation": (train, "validation_loss")}
    for key, error in (("fail", RuntimeError), ("oom", torch.cuda.OutOfMemoryError)):
        if FAULTS.get(key):
            module, name = places[FAULTS[key]]
            setattr(module, name, raising(FAULTS[key], error))


if __name__ == "__main__":
    install()
    sys.exit(worker.main(sys.argv[1:]))
