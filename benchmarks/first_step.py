"""Time to the first training step of `python -m training train` on the tiny model, split by
phase (imports, model loading, caching, first step): the median of N runs of train_speed's CLI
case, plus the heaviest imports of `training.train` from `python -X importtime`."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import cli_case  # noqa: E402

MARKS = ("hello_s", "run_dir_s", "loading_model_s", "caching_s", "training_s",
         "first_progress_s", "done_s")


def import_times(top: int) -> list[tuple[str, float]]:
    """(package, cumulative seconds) of the heaviest top-level packages `training.train` pulls in."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import training.train"],
                         env=env, capture_output=True, text=True, check=True).stderr
    out = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = line.split("|")
        if cum.strip().isdigit() and "." not in name.strip():
            out[name.strip()] = int(cum) / 1e6
    return sorted(out.items(), key=lambda kv: -kv[1])[:top]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--images", type=int, default=8, help="drawn images in the dataset")
    p.add_argument("--image-size", type=int, default=64, help="their size in pixels (the run "
                                                              "trains at 64 px)")
    a = p.parse_args()
    rows = [cli_case(a.steps, 1, images=a.images, image_size=a.image_size) for _ in range(a.runs)]
    med = {k: round(statistics.median(r[k] for r in rows if r[k] is not None), 2)
           for k in MARKS if any(r[k] is not None for r in rows)}
    # Phases: imports (process start to the run folder), model loading, caching, first step.
    phases = dict(start_and_imports_s=med["loading_model_s"],
                  model_s=round(med["caching_s"] - med["loading_model_s"], 2),
                  caching_s=round(med["training_s"] - med["caching_s"], 2),
                  to_first_step_s=med["first_progress_s"])
    print(json.dumps(dict(runs=a.runs, images=a.images, image_size=a.image_size, median=med, phases=phases,
                          imports=[(n, round(s, 2)) for n, s in import_times(8)])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
