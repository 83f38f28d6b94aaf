"""The desktop app's start-up: cold start to the window shown, and to a 200-image dataset fully
shown with its thumbnails (issue 9). Prints figures; asserts nothing about time.

    .venv/bin/python benchmarks/gui_start.py                 # 5 runs each, 200 images 1024 px
    .venv/bin/python benchmarks/gui_start.py --quick         # smoke run: 1 run, 40 images
    .venv/bin/python benchmarks/gui_start.py --platform xcb  # a real X display (DISPLAY set)

Every run is a fresh `python -m ui` process with a fresh settings/projects home, as an artist's
first launch and first drop of a folder (the OS file cache is warm after the first run; the
first run's figures are given apart as `first_*`). Times are seconds from the process being
spawned (`wall`: interpreter, imports, Qt and the app) and, in brackets in the JSON, as the app
itself measures them from `ui.app.main()` (`app`).

Cases:
- `window`: `python -m ui --quit-after-start`: until the window is shown.
- `dataset`: `python -m ui FOLDER --report-loaded` (ui/startup_probe.py) on N generated JPEGs with
  captions: `window_s`, `project_open_s` (the folder is a project and the grid lists every
  image), `thumbnails_visible_s` (every thumbnail in view is decoded and drawn: what the artist
  sees), `thumbnails_all_s` (all N decoded, as if scrolled through), `examined_s` (the dataset
  doctor has read every image: badges, summary and the Train button's checks), `exit_s`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, loadavg, machine, scratch, table  # noqa: E402

DATASET_EVENTS = {"window_shown": "window_s", "project_open": "project_open_s",
                  "thumbnails_visible": "thumbnails_visible_s",
                  "thumbnails_all": "thumbnails_all_s", "dataset_examined": "examined_s"}


def make_images(folder: Path, n: int, side: int) -> Path:
    """`n` JPEG paintings-ish (overlapping coloured shapes) with caption files."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    for i in range(n):
        image = Image.new("RGB", (side, side * 3 // 4 if i % 3 == 0 else side),
                          tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.randrange(side), rng.randrange(side)
            r = rng.randrange(side // 16, side // 3)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256)
                                                                  for _ in range(3)))
        image.save(folder / f"painting-{i:03d}.jpg", quality=90)
        (folder / f"painting-{i:03d}.txt").write_text(f"inkwash, shapes, study {i}\n")
    return folder


def launch(args: list[str], home: Path, platform: str, timeout: float) -> dict:
    """Run `python -m ui ARGS`; the arrival time (from spawn) of each stdout line's event."""
    env = dict(os.environ, LORA_STUDIO_HOME=str(home), QT_QPA_PLATFORM=platform,
               PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ui", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict = {}
    for line in proc.stdout:
        wall = round(time.perf_counter() - started, 3)
        if line.startswith("window shown after"):  # --quit-after-start's line
            seen["window_shown"] = {"wall": wall, "app": float(line.split()[3])}
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        seen[event.pop("event")] = {"wall": wall, "app": event.pop("s", None), **event}
    proc.wait(timeout=timeout)
    seen["exit"] = {"wall": round(time.perf_counter() - started, 3)}
    if proc.returncode != 0:
        seen["error"] = proc.stderr.read()[-2000:]
    return seen


def summarize(name: str, runs: list[dict], keys: dict[str, str]) -> dict:
    row: dict = {"case": name, "runs": len(runs), "loadavg": loadavg()}
    for event, key in {**keys, "exit": "exit_s"}.items():
        walls = [r[event]["wall"] for r in runs if event in r]
        if not walls:
            continue
        row[key] = round(statistics.median(walls), 3)
        row[f"{key}_min"], row[f"{key}_max"] = min(walls), max(walls)
        row[f"first_{key}"] = walls[0]
        apps = [r[event].get("app") for r in runs if r.get(event, {}).get("app") is not None]
        if apps:
            row[f"app_{key}"] = round(statistics.median(apps), 3)
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        row["error"] = errors[0]
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="launches per case (median shown)")
    p.add_argument("--images", type=int, default=200, help="images in the dataset case")
    p.add_argument("--side", type=int, default=1024, help="image size in pixels")
    p.add_argument("--platform", default="offscreen", help="QT_QPA_PLATFORM for the app")
    p.add_argument("--timeout", type=float, default=300, help="seconds per launch")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 run, 40 images")
    args = p.parse_args()
    if args.quick:
        args.runs, args.images = 1, 40
    sys.modules.setdefault("torch", None)  # machine(): the GUI has no torch; don't import it
    print(json.dumps({"machine": machine()}), flush=True)
    work = scratch("gui-start-")
    images = make_images(work / "my paintings", args.images, args.side)

    rows = []
    window_runs = [launch(["--quit-after-start"], work / f"home-w{i}", args.platform,
                          args.timeout) for i in range(args.runs)]
    rows.append(summarize("window", window_runs, {"window_shown": "window_s"}))
    print(json.dumps(rows[-1]), flush=True)
    dataset_runs = [launch([str(images), "--report-loaded"], work / f"home-d{i}",
                           args.platform, args.timeout) for i in range(args.runs)]
    row = summarize(f"dataset ({args.images} x {args.side} px JPEG)", dataset_runs,
                    DATASET_EVENTS)
    shown = [r["thumbnails_visible"].get("visible") for r in dataset_runs
             if "thumbnails_visible" in r]
    row["visible_thumbnails"] = shown[0] if shown else None  # in view at the default size
    for r in rows + [row]:
        r["platform"] = args.platform
    rows.append(row)
    print(json.dumps(row), flush=True)
    print()
    print(table(rows, ("case", "runs", "window_s", "first_window_s", "project_open_s",
                       "thumbnails_visible_s", "thumbnails_all_s", "examined_s", "exit_s")))
    print("\nSeconds from spawning `python -m ui` (median of the runs; first_*: the first run).")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
