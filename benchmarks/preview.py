"""Time to the first preview image after loading, and the cost of switching LoRAs or strengths."""
from __future__ import annotations

import time

T0 = time.perf_counter()  # "imports_s" and "to_first_image_s" are timed from here

import argparse, json, statistics, sys  # noqa: E401, E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import loadavg, machine, peak_rss_mb, scratch, table  # noqa: E402

COLS = ("case", "set_adapters_ms_cold", "set_adapters_ms", "generate_ms", "overhead_ms",
        "diff_vs_base")


def make_loras(model_dir: Path, out: Path) -> list[Path]:
    """Two kohya LoRA files, as tests/conftest.py's `lora_files`: the real LoRA config on the
    model's UNet, random lora_B (as after training, so the effect is visible), the real exporter."""
    import torch
    from diffusers import UNet2DConditionModel

    from studio.config import TrainConfig
    from training.export import export_adapter
    from training.metadata import TrainingFacts
    from training.models import lora_config

    cfg = TrainConfig(rank=4, alpha=4.0, output_name="bench-style", resolution=64)
    paths = []
    for step, seed in ((50, 1), (100, 2)):
        unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
        unet.add_adapter(lora_config(cfg))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in unet.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        facts = TrainingFacts(
            base_model_name=model_dir.name, base_model_version="sd_v1",
            prediction_type="epsilon", num_images=6, steps=step, epochs=1, max_steps=100,
            tag_frequency={}, dataset_name="bench", training_started_at=0.0, session_id=1)
        paths.append(export_adapter(unet, cfg, facts, out / f"bench-step{step}.safetensors")[0])
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", help="a diffusers SD1.x folder (default: build the tiny model)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per image")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--sampler", default="Euler")
    p.add_argument("--repeats", type=int, default=5, help="warm rounds; the median is shown")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: CUDA when available")
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 steps, 1 warm round")
    a = p.parse_args()
    if a.quick:
        a.steps, a.repeats = 2, 1

    import numpy as np
    import torch

    import training.generate as generate
    from studio.protocol import GenerateRequest
    from training import tiny_model
    torch.set_num_threads(a.threads)  # two threads on a 2-core CPU are 10-60x slower
    imports_s = time.perf_counter() - T0
    print(json.dumps({"machine": machine()}), flush=True)

    tmp = scratch("bench-preview-")
    t = time.perf_counter()
    model = Path(a.model).resolve() if a.model else tiny_model.build(tmp / "tiny-sd15")
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    lora_a, lora_b = make_loras(model, tmp)
    loras_s = time.perf_counter() - t

    # Count base-model loads: every load goes through generate.load_pipeline.
    loads, real_load = [], generate.load_pipeline
    generate.load_pipeline = lambda *args, **kw: loads.append(1) or real_load(*args, **kw)

    # 1. Time to the first image: load the pipeline, then one image (cold: first-call costs).
    t = time.perf_counter()
    gen = generate.Generator.load(str(model), tmp, a.device)
    load_s = time.perf_counter() - t
    pipe, unet = gen.pipe, gen.pipe.unet
    req = GenerateRequest(prompt="a red circle on a white background", steps=a.steps,
                          width=a.size, height=a.size, sampler=a.sampler, seed=0)

    def image() -> tuple[float, np.ndarray]:
        t = time.perf_counter()
        _, _, im, _ = next(gen.generate(req))
        return time.perf_counter() - t, np.asarray(im, dtype=np.float32)

    first_s, base_img = image()
    to_first_image_s = time.perf_counter() - T0
    base_ms = 1000 * statistics.median(image()[0] for _ in range(max(3, a.repeats)))
    first = dict(case="first image", device=str(pipe.device), dtype=str(pipe.unet.dtype),
                 steps=a.steps, size=a.size, imports_s=round(imports_s, 2),
                 build_model_s=round(build_s, 2), make_loras_s=round(loras_s, 2),
                 load_s=round(load_s, 2), first_image_s=round(first_s, 3),
                 to_first_image_s=round(to_first_image_s, 2), generate_ms=round(base_ms, 1),
                 loadavg=loadavg())
    print(json.dumps(first), flush=True)

    # 2. Switching: each change is set_adapters (the Generate tab's path) + one image. Round 0 is
    #    cold (A and B are read from disk on first use); the warm rounds cycle through the same
    #    changes again, so every switch really changes something.
    changes = [("adapter A at 1.0", [(lora_a, 1.0)]), ("same adapter, strength 0.5",
               [(lora_a, 0.5)]), ("switch to adapter B", [(lora_b, 1.0)]),
               ("A and B together (0.7 each)", [(lora_a, 0.7), (lora_b, 0.7)]),
               ("back to none", [])]
    timings: dict[str, dict[str, list[float]]] = {n: {"set": [], "gen": []} for n, _ in changes}
    diffs: dict[str, float] = {}
    for _ in range(1 + a.repeats):
        for name, adapters in changes:
            t = time.perf_counter()
            gen.set_adapters(adapters)
            timings[name]["set"].append(time.perf_counter() - t)
            gen_s, img = image()
            timings[name]["gen"].append(gen_s)
            diffs[name] = float(np.abs(img - base_img).mean())  # > 0: the LoRA is applied
    rows = [first]
    for name, _ in changes:
        set_s, gen_s = timings[name]["set"], timings[name]["gen"][1:]
        row = dict(case=name, set_adapters_ms_cold=round(1000 * set_s[0], 1),
                   set_adapters_ms=round(1000 * statistics.median(set_s[1:]), 2),
                   generate_ms=round(1000 * statistics.median(gen_s), 1),
                   overhead_ms=round(1000 * (statistics.median(set_s[1:]) +
                                             statistics.median(gen_s)) - base_ms, 1),
                   diff_vs_base=round(diffs[name], 2))
        print(json.dumps(row), flush=True)
        rows.append(row)

    # 3. The base model must have been loaded once, and the pipeline never replaced.
    check = dict(case="base model loads", base_loads=len(loads),
                 same_pipeline=gen.pipe is pipe and gen.pipe.unet is unet,
                 adapters_loaded=len(gen.adapters), peak_rss_mb=round(peak_rss_mb()),
                 loadavg=loadavg())
    print(json.dumps(check), flush=True)
    print(table([first], ("case", "device", "steps", "size", "imports_s", "load_s",
                          "first_image_s", "to_first_image_s", "generate_ms")))
    print()
    print(table(rows[1:], COLS))
    print(f"\nbase model loaded {len(loads)} time(s); pipeline kept: {check['same_pipeline']}; "
          f"peak RSS {check['peak_rss_mb']} MB; load average {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
