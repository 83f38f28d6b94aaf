"""Speed and memory of the real LoRA training step: tiny/mid/SD1.5/SDXL, cached or not, CPU/CUDA."""
from __future__ import annotations

import time

T0 = time.perf_counter()  # "imports_s" is timed from here (Python's own start-up excluded)

import argparse, json, os, random, statistics, subprocess, sys  # noqa
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (ROOT, config_of, loadavg, machine, peak_rss_mb, scratch,  # noqa: E402
                          table, watch_peak_rss)

SUITES = {  # (model, res, batch, rank, precision, cache, steps, warmup)
    "quick": [("tiny", 64, 1, 4, "auto", True, 5, 2)],
    "cpu": [("tiny", 64, b, 4, "fp32", c, 30, 5) for b in (1, 4) for c in (True, False)] +
           [("mid", 128, 1, 16, "fp32", c, 10, 2) for c in (True, False)] +
           [("mid", 256, 1, 16, "fp32", True, 6, 2),
            ("sd15", 256, 1, 16, "fp32", True, 3, 1), ("sd15", 256, 1, 16, "bf16", True, 3, 1),
            ("sdxl", 256, 1, 16, "fp32", True, 1, 1)],
    "gpu": [(m, r, b, 16, "bf16", True, 20, 5) for m, r in (("sd15", 512), ("sdxl", 1024))
            for b in (1, 4)] + [("tiny", 64, 4, 16, "bf16", True, 50, 10)],
}
COLS = ("model", "res", "batch", "rank", "mixed_precision", "cache", "ms_step", "steps_s",
        "images_s", "peak_rss_mb", "peak_gpu_mb", "imports_s", "model_s", "cache_s",
        "first_step_s", "to_first_step_s")
CLI_COLS = ("case", "steps", "returncode", "hello_s", "run_dir_s", "loading_model_s", "caching_s",
            "training_s", "first_progress_s", "done_s", "steps_s", "peak_rss_mb")


def build_base(c: dict, tmp: Path):
    """(BaseModel, where its weights came from). tiny: the real load_base path from disk."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from studio.config import TrainConfig
    from training import models, tiny_model
    if c["model"] == "tiny":
        folder = tiny_model.build(tmp / "tiny")  # ≈0.5 s of setup, not part of model_s
        t = time.perf_counter()
        base = models.load_base(TrainConfig(base_model=str(folder)), tmp)
        return base, "load_base(tiny_model.build)", time.perf_counter() - t
    t = time.perf_counter()
    unet_cfg, source = config_of(c["model"], "unet")
    unet = UNet2DConditionModel.from_config(unet_cfg)  # random init, like a fresh download
    sd1 = c["model"] != "sdxl"  # SDXL: synthetic cache (its two text encoders aren't built)
    vae = AutoencoderKL.from_config(config_of(c["model"], "vae")[0]) if sd1 else None
    te = CLIPTextModel(CLIPTextConfig(**config_of(c["model"], "text_encoder")[0])) if sd1 else None
    tiny_model.write_tokenizer(tmp / "tokenizer")  # a small CLIP-format vocabulary
    tok = CLIPTokenizer.from_pretrained(tmp / "tokenizer")
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear")
    for m in filter(None, (unet, vae, te)):
        m.requires_grad_(False).eval()
    base = models.BaseModel(c["model"], tmp, "sd_v1", tok, te, vae, unet, sched)
    return base, source, time.perf_counter() - t


def run_case(c: dict) -> dict:
    """One case in this fresh process: set up as training/train.py does, then time steps."""
    if c["model"] == "sdxl" and not c["cache"]:
        raise SystemExit("sdxl runs cached only (its two text encoders are not built)")
    import torch
    from accelerate import Accelerator

    from studio import dataset
    from studio.config import Precision, TrainConfig
    from training import cache as tcache, data as tdata, models
    from training.demo import draw_shapes
    from training.loss import LatentScale, train_step
    from training.optim import build_optimizer, build_schedule
    from training.train import cpu_threads, mixed_precision
    imports_s, res, bs = time.perf_counter() - T0, c["res"], c["batch"]
    prec = {"fp32": Precision.no, "bf16": Precision.bf16, "fp16": Precision.fp16,
            "auto": Precision.auto}[c["precision"]]
    cfg = TrainConfig(resolution=res, rank=c["rank"], alpha=float(c["rank"]), batch_size=bs,
                      enable_buckets=False, mixed_precision=prec, cpu_threads=c["threads"],
                      max_steps=c["steps"] + c["warmup"])
    # Same Accelerator and thread setup as train.py (one thread on a 2-core CPU: machine-notes §3).
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg), cpu=c["device"] == "cpu")
    device = accelerator.device
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg))
    torch.manual_seed(cfg.seed)
    tmp = scratch("bench-train-")
    base, source, model_s = build_base(c, tmp)

    # Data: drawn shapes at the training size, 2 batches per epoch.
    draw_shapes(tmp / "data", max(4, 2 * bs), seed=1, size=res)
    items = dataset.load(tmp / "data")
    t = time.perf_counter()
    data = None
    if c["model"] == "sdxl":  # synthetic "cached" latents / embeddings / pooled embeddings
        n, lat = len(items), res // 8
        mean, std = torch.randn(n, 4, lat, lat), torch.full((n, 4, lat, lat), 0.05)
        text, pooled = torch.randn(n, 77, 2048), torch.randn(n, 1280)
        time_ids = torch.tensor([[res, res, 0, 0, res, res]] * bs, dtype=torch.float32)
    elif c["cache"]:  # the real cache: VAE posterior + text embeddings on disk, then in memory
        data, _ = tdata.build(items, [], cfg, base, tmp / "cache", device)
    else:  # encode per step: keep VAE and text encoder on the device, pixels preloaded
        pixels = tcache._to_pixels(items, (res, res), False)
        captions = [it.caption for it in items]
        base.vae.to(device, dtype=torch.float32)
        base.text_encoder.to(device)
    cache_s = time.perf_counter() - t
    scale = LatentScale.of(base.vae) if base.vae else LatentScale(0.13025)

    # The LoRA on the frozen UNet, exactly as train.py step 3.
    t = time.perf_counter()
    unet = base.unet
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32)
    unet.to(device, dtype=weight_dtype)
    params = models.add_lora(unet, cfg)
    optimizer = build_optimizer(cfg, params, device)
    lr_schedule = build_schedule(cfg, optimizer, cfg.max_steps)
    unet, optimizer, lr_schedule = accelerator.prepare(unet, optimizer, lr_schedule)
    unet.train()
    setup_s = time.perf_counter() - t
    gen, rng = torch.Generator().manual_seed(cfg.seed), random.Random(cfg.seed)
    queue, epoch = [], 0

    def batch(idx) -> tuple:
        """(unscaled latents, text embeddings, SDXL's added conditioning), as TrainingData.batch."""
        if data is not None:
            return data.batch(idx, gen, rng)
        if base.vae is None:
            added = {"text_embeds": pooled[idx].to(device, weight_dtype),
                     "time_ids": time_ids[:len(idx)].to(device, weight_dtype)}
            return (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen),
                    text[idx], added)
        with torch.no_grad():  # uncached: the VAE and text encoder run every step
            dist = base.vae.encode(pixels[idx].to(device)).latent_dist
            lat = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen).to(device)
            return lat, tcache.encode_text(base, [captions[i] for i in idx], device)[0], None

    def step() -> bool:
        """One step of train.py's loop: its micro-batch (loss.train_step, the same function),
        the finite check (its one host-device sync) and the update."""
        nonlocal queue, epoch
        if not queue:
            queue, epoch = data.epoch_batches(epoch, cfg.seed, bs) if data else \
                [list(range(k, k + bs)) for k in range(0, len(items), bs)], epoch + 1
        loss = train_step(accelerator, unet, batch(queue.pop(0)), base.noise_scheduler,
                          base.prediction_type, scale, gen, cfg.noise_offset, cfg.min_snr_gamma,
                          weight_dtype)
        if not bool(torch.isfinite(loss)):  # skips the update, as train.py does
            optimizer.zero_grad(set_to_none=True)
            return False
        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step.loss = loss
        return True

    times, bad, cuda = [], 0, device.type == "cuda"
    for i in range(c["warmup"] + c["steps"]):  # median over the steps after the warm-up ones
        t = time.perf_counter()
        bad += not step()
        if cuda:
            torch.cuda.synchronize()  # timing only: the step's kernels have all finished
        times.append(time.perf_counter() - t)
        if i == 0:
            first_step_s, to_first_step_s = times[0], time.perf_counter() - T0
    times = times[c["warmup"]:]
    med = statistics.median(times)
    secs = dict(imports_s=imports_s, model_s=model_s, cache_s=cache_s, setup_s=setup_s,
                first_step_s=first_step_s, to_first_step_s=to_first_step_s)
    return dict(c, device=str(device), mixed_precision=accelerator.mixed_precision,
                torch_threads=torch.get_num_threads(), ms_step=round(1000 * med, 1),
                ms_step_min=round(1000 * min(times), 1), ms_step_max=round(1000 * max(times), 1),
                steps_s=round(1 / med, 3), images_s=round(bs / med, 3),
                peak_rss_mb=round(peak_rss_mb()),
                peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
                **{k: round(v, 2) for k, v in secs.items()}, config=source,
                unet_params_m=round(sum(p.numel() for p in base.unet.parameters()) / 1e6, 1),
                lora_params=sum(p.numel() for p in params), nonfinite_steps=bad,
                loss=round(float(getattr(step, "loss", float("nan"))), 4), loadavg=loadavg())


def cli_case(steps: int, threads: int, model: Path | None = None, res: int = 64,
             batch: int = 1, targets: str = "attention", images: int = 8,
             image_size: int | None = None) -> dict:
    """The real `python -m training train` on a project of drawn images; seconds from spawning
    the process to each event's arrival on stdout (Python's start-up and every import included).
    `model`: a base model folder (default: a fresh tiny model); `image_size`: the drawn images'
    size (default `res`), e.g. 1024 for photos as an artist's dataset holds them."""
    from studio import config
    from studio.runs.project import Project
    from training import tiny_model
    from training.demo import draw_shapes
    tmp = scratch("bench-cli-")
    model, root = model or tiny_model.build(tmp / "model"), tmp / "project"
    draw_shapes(root / "dataset", images, seed=1, size=image_size or res)
    Project(root).save_config(config.from_dict(dict(
        base_model=str(model), resolution=res, rank=4, alpha=4.0, max_steps=steps,
        batch_size=batch, target_preset=targets, enable_buckets=False, mixed_precision="no",
        output_name="bench", sample_every_n_epochs=0, validation_images=0, save_every_n_epochs=0,
        resume_point_every_minutes=0, cpu_threads=threads)))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "training", "train", str(root), "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    peak = watch_peak_rss(proc)
    seen, last, progress = {}, {}, []
    for line in proc.stdout:  # event arrival times, as the GUI would see them
        now, ev = time.perf_counter() - t0, json.loads(line)
        key = ev["event"] + (f":{ev['phase']}" if ev["event"] == "status" else "")
        seen.setdefault(key, now)
        last[key] = now  # the 2nd loading_model status comes after the heavy imports
        if ev["event"] == "progress":
            progress.append((now, ev["step"]))
    rc = proc.wait()
    (a, s0), (b, s1) = (progress or [(0, 0)])[0], (progress or [(0, 0)])[-1]
    marks = dict(hello_s=seen.get("hello"), run_dir_s=seen.get("status:loading_model"),
                 loading_model_s=last.get("status:loading_model"),
                 caching_s=seen.get("status:caching"), training_s=seen.get("status:training"),
                 first_progress_s=a if progress else None, done_s=seen.get("done"))
    # steps/s between the first progress event (step 1 done) and the last (every step done):
    # the loop as the artist runs it, without start-up, the first step and the final save.
    rate = (s1 - s0) / (b - a) if b > a else None
    return dict(case="cli", steps=steps, returncode=rc, batch=batch, targets=targets, res=res,
                **{k: None if v is None else round(v, 2) for k, v in marks.items()},
                steps_s=None if rate is None else round(rate, 2),
                images_s=None if rate is None else round(rate * batch, 2),
                peak_rss_mb=round(peak[0] / 2**20), loadavg=loadavg())


def build_mid(folder: Path) -> Path:
    """The "mid" model (SD1.5's layout at 1/4 width, random weights) as a diffusers folder, so
    the real CLI loads it like any base model."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from training import tiny_model
    torch.manual_seed(0)
    tiny_model.write_tokenizer(folder / "tokenizer")
    CLIPTokenizer.from_pretrained(folder / "tokenizer")  # fails here, not in the worker
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return tiny_model._save(folder, "StableDiffusionPipeline", dict(
        unet=UNet2DConditionModel.from_config(config_of("mid", "unet")[0]),
        vae=AutoencoderKL.from_config(config_of("mid", "vae")[0]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**config_of("mid", "text_encoder")[0])),
        scheduler=scheduler))


MATRIX_STEPS = {"tiny": 120, "mid": 24}  # about 10 s of training per case on a quiet 2-core CPU
MATRIX_COLS = ("model", "targets", "batch", "steps_s", "images_s", "first_progress_s",
               "peak_rss_mb", "steps", "loadavg")


def matrix(threads: int, res: int, scale: float) -> list[dict]:
    """Issue 15's comparison: tiny and mid x attention/attention_ff x batch 1/4 (fp32, 128 px,
    rank 4), each one fresh `python -m training train` process."""
    from training import tiny_model
    tmp = scratch("bench-models-")
    models = {"tiny": tiny_model.build(tmp / "tiny"), "mid": build_mid(tmp / "mid")}
    rows = []
    for name, folder in models.items():
        for targets in ("attention", "attention_ff"):
            for batch in (1, 4):
                steps = max(4, round(MATRIX_STEPS[name] * scale / batch ** 0.5))
                row = dict(model=name, **cli_case(steps, threads, folder, res, batch, targets))
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def summary(rows: list[dict]) -> str:
    out = [table([r for r in rows if "ms_step" in r], COLS)]
    if any(r.get("case") == "cli" for r in rows):  # seconds from process start, by event
        out += ["", table([r for r in rows if r.get("case") == "cli"], CLI_COLS)]
    out += [f"skipped {r['model']} {r['res']} px {r['precision']}: {r['skipped']}"
            for r in rows if "skipped" in r]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for flag, default, what in (("--model", "tiny", "tiny, mid, sd15, sdxl"),
                                ("--res", None, "pixels (default 64; 128 for --matrix)"),
                                ("--batch", "1", "images per step"),
                                ("--precision", "auto", "auto (bf16 on CUDA, else fp32), fp32, "
                                                        "bf16, fp16")):
        p.add_argument(flag, default=default, help=f"comma list: {what}")
    for flag, default, what in (("--rank", 16, "LoRA rank"), ("--threads", 1, "CPU threads"),
                                ("--steps", 20, "timed steps"), ("--warmup", 3, "untimed")):
        p.add_argument(flag, type=int, default=default, help=what)
    p.add_argument("--cache", default="on", choices=("on", "off", "both"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu"))
    p.add_argument("--suite", choices=sorted(SUITES), help="a preset list of cases instead")
    p.add_argument("--cli", action="store_true", help="also time `python -m training train`")
    p.add_argument("--cli-steps", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="smoke run: --suite quick --cli, 6 steps")
    p.add_argument("--matrix", action="store_true",
                   help="issue 15's table: tiny/mid x attention/attention_ff x batch 1/4 at "
                        "--res (default 128), each through `python -m training train`")
    p.add_argument("--matrix-scale", type=float, default=1.0, help="x the matrix's step counts")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    a = p.parse_args()
    if a.case:
        print(json.dumps(run_case(json.loads(a.case))), flush=True)
        return 0
    if a.matrix:
        print(json.dumps({"machine": machine()}), flush=True)
        rows = matrix(a.threads, int(a.res or 128), a.matrix_scale)
        print(table(rows, MATRIX_COLS), flush=True)
        print(f"load average after: {loadavg()}", flush=True)
        return 0
    a.res = a.res or "64"
    if a.quick:
        a.suite, a.cli, a.cli_steps = "quick", True, 6
    keys = ("model", "res", "batch", "rank", "precision", "cache", "steps", "warmup")
    cases = [dict(zip(keys, s)) for s in SUITES[a.suite]] if a.suite else [
        dict(model=m, res=int(r), batch=int(b), rank=a.rank, precision=pr, cache=ca,
             steps=a.steps, warmup=a.warmup)
        for m in a.model.split(",") for r in a.res.split(",") for b in a.batch.split(",")
        for pr in a.precision.split(",")
        for ca in {"on": (True,), "off": (False,), "both": (True, False)}[a.cache]]
    print(json.dumps({"machine": machine()}), flush=True)
    rows = []
    for c in cases:  # each case in a fresh process: honest import time and peak RSS
        c.update(device=a.device, threads=a.threads)
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        try:
            proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(c)], env=env,
                                  capture_output=True, text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess((), 1, "", f"over --timeout {a.timeout:g} s")
        lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        row = json.loads(lines[-1]) if proc.returncode == 0 and lines else dict(
            c, skipped=(proc.stderr.strip().splitlines() or ["failed"])[-1][:300])
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.cli:
        rows.append(cli_case(a.cli_steps, a.threads))
        print(json.dumps(rows[-1]), flush=True)
    print(summary(rows), flush=True)
    print(f"load average after: {loadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
