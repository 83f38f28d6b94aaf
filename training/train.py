"""train(): one readable pass from a project folder to a LoRA file (diffusers' LoRA example, tidied)."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.optimization import get_scheduler

from studio import dataset
from studio.config import Precision, TrainConfig
from studio.project import Project, RunDir
from studio.protocol import Checkpoint, Progress, Status
from training import cache, models
from training.events import Control, EventSink
from training.export import export_adapter
from training.metadata import TrainingFacts

log = logging.getLogger("training")


@dataclass
class Result:
    adapter: Path
    files: list[Path]
    step: int
    stopped: bool
    unet: torch.nn.Module  # the trained UNet with its LoRA (for in-process tests)


def cpu_threads(cfg: TrainConfig) -> int:
    # Two threads on a 2-core machine are 10-60x slower than one (machine-notes.md §3), and
    # `accelerate launch` exports OMP_NUM_THREADS=2, so the count is set here, not by env var.
    return cfg.cpu_threads or max(1, (os.cpu_count() or 2) // 2)


def mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != Precision.auto:
        return cfg.mixed_precision.value
    if not torch.cuda.is_available():
        return "no"  # bf16 autocast is slower than fp32 for small models on CPU (machine-notes §4)
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def plan_steps(cfg: TrainConfig, n_images: int, world: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    batches = math.ceil(n_images / (cfg.batch_size * world))
    per_epoch = max(1, math.ceil(batches / cfg.gradient_accumulation_steps))
    return per_epoch, cfg.max_steps or cfg.epochs * per_epoch


def batch_order(n: int, size: int, rank: int, world: int, seed: int):
    """Endless per-rank index batches, (epoch, indices): a fresh seeded permutation each epoch."""
    gen = torch.Generator().manual_seed(seed)
    epoch = 0
    while True:
        perm = torch.randperm(n, generator=gen).tolist()
        step = size * world
        for start in range(0, n, step):
            chunk = perm[start:start + step]
            if len(chunk) < step:  # top up a short last batch so every rank gets `size` images
                chunk += perm[:step - len(chunk)]
            yield epoch, chunk[rank * size:(rank + 1) * size]
        epoch += 1


def train(project: Project, cfg: TrainConfig, run: RunDir, sink: EventSink,
          control: Control) -> Result:
    started_at = time.time()
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg))
    main = accelerator.is_main_process
    device = accelerator.device
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg))
        log.info("training on the CPU with %d CPU thread(s)", torch.get_num_threads())
    else:
        log.info("training on %s with %s mixed precision", device, accelerator.mixed_precision)
    # Same seed everywhere: CPU reruns are bitwise identical; ranks differ only by data slice.
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # 1. Data (already validated by the CLI; listed again here so the run is self-contained).
    data_dir = project.resolve(cfg.dataset_dir)
    items = dataset.load(data_dir, cfg.exclude_images)
    captions = [dataset.full_caption(it.caption, cfg.trigger_word) for it in items]

    # 2. Base model.
    sink.emit(Status("loading_model", f"Loading {cfg.base_model}"))
    base = models.load_base(cfg, project.root)
    prediction = base.prediction_type
    log.info("base model %s (%s, %s prediction)", base.name, base.version, prediction)

    # 3. Cache latents and text embeddings (main process first, the others then only read).
    sink.emit(Status("caching", f"Preparing {len(items)} images"))
    with accelerator.main_process_first():
        cached = cache.build(
            items, captions, base, cfg.resolution, project.cache, device,
            on_progress=lambda d, t: sink.emit(Status("caching", f"Encoded {d}/{t}",
                                                      {"done": d, "total": t})) if main else None)
    details = dict(latents_encoded=cached.encoded_latents, latents_reused=cached.reused_latents,
                   texts_encoded=cached.encoded_texts, texts_reused=cached.reused_texts)
    sink.emit(Status("caching", f"Cache ready: {cached.encoded_latents} images encoded, "
                                f"{cached.reused_latents} reused", details))
    # SD scales latents to about unit variance (0.18215 for SD1.x); some VAEs also shift them.
    scaling = float(base.vae.config.scaling_factor)
    shift = float(base.vae.config.get("shift_factor") or 0.0)
    del base.vae, base.text_encoder  # a step needs only the UNet from here on

    # 4. The LoRA on a frozen UNet. Frozen weights in half precision on the GPU save memory;
    #    the LoRA weights themselves stay fp32 (models.add_lora).
    unet = base.unet
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32)
    unet.to(device, dtype=weight_dtype)
    params = models.add_lora(unet, cfg)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    n_trainable = sum(p.numel() for p in params)
    n_unet = sum(p.numel() for p in unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    per_epoch, total = plan_steps(cfg, len(items), accelerator.num_processes)
    lr_schedule = get_scheduler(cfg.lr_scheduler.value, optimizer,
                                num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=total)
    unet, optimizer, lr_schedule = accelerator.prepare(unet, optimizer, lr_schedule)
    sink.emit(Status("training", f"Training {n_trainable:,} LoRA parameters "
                                 f"({100 * n_trainable / n_unet:.2f}% of the UNet) for {total} "
                                 f"steps", dict(trainable_params=n_trainable, unet_params=n_unet,
                                               steps=total, steps_per_epoch=per_epoch,
                                               images=len(items), prediction_type=prediction)))

    # 5. The loop. Randomness comes from one CPU generator so runs repeat exactly on any device.
    noise_scheduler = base.noise_scheduler
    n_timesteps = noise_scheduler.config.num_train_timesteps
    gen = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)
    order = batch_order(len(items), cfg.batch_size, accelerator.process_index,
                        accelerator.num_processes, cfg.seed)
    tags = dataset.tag_frequency(items, cfg.trigger_word)
    session_id = random.SystemRandom().randrange(2**31)

    def facts(step: int, epoch: int) -> TrainingFacts:
        return TrainingFacts(
            base_model_name=base.name, base_model_version=base.version,
            prediction_type=prediction, num_images=len(items), steps=step, epochs=epoch,
            max_steps=total, tag_frequency=tags, dataset_name=data_dir.name,
            training_started_at=started_at, session_id=session_id, finished_at=time.time(),
            mixed_precision=accelerator.mixed_precision)

    unet.train()
    step, epoch, loss_sum, loss_n = 0, 0, 0.0, 0
    t_first = None
    while step < total:
        for micro in range(cfg.gradient_accumulation_steps):
            epoch, idx = next(order)
            mean, std = cached.latent_mean[idx], cached.latent_std[idx]
            # Sample the VAE posterior afresh each step, as encoding per step would.
            latents = (mean + std * torch.randn(mean.shape, generator=gen) - shift) * scaling
            noise = torch.randn(latents.shape, generator=gen)
            timesteps = torch.randint(0, n_timesteps, (len(idx),), generator=gen)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            if prediction == "v_prediction":  # Salimans & Ho 2022, "Progressive Distillation" §4
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            text = cached.text[idx].to(device, dtype=weight_dtype)
            with accelerator.autocast():
                pred = unet(noisy.to(device, dtype=weight_dtype), timesteps.to(device), text).sample
            loss = F.mse_loss(pred.float(), target.to(device).float())
            accelerator.backward(loss / cfg.gradient_accumulation_steps)
            loss_sum, loss_n = loss_sum + loss.detach(), loss_n + 1  # no host sync per step
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        t_first = t_first or time.monotonic()

        last = step == total
        if control.stop_requested:
            accelerator.set_trigger()
        stopping = accelerator.check_trigger()  # every rank stops at the same step
        if main and (last or stopping or sink.progress_due()):
            elapsed = time.monotonic() - t_first
            eta = elapsed / (step - 1) * (total - step) if step > 1 else None
            sink.progress(Progress(step=step, total=total, epoch=epoch + 1,
                                   loss=float(loss_sum) / max(loss_n, 1),
                                   lr=lr_schedule.get_last_lr()[0], eta_s=eta), force=True)
            loss_sum, loss_n = 0.0, 0
        if cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0 and not last \
                and not stopping:
            if main:
                path = run.checkpoints / f"{cfg.output_name}-step{step:06d}.safetensors"
                export_adapter(accelerator.unwrap_model(unet), cfg, facts(step, epoch + 1), path)
                sink.emit(Checkpoint(step=step, path=str(path)))
            accelerator.wait_for_everyone()
        if stopping:
            break

    # 6. Save.
    sink.emit(Status("saving", "Saving the LoRA"))
    unet = accelerator.unwrap_model(unet)
    files: list[Path] = []
    if main:
        files = export_adapter(unet, cfg, facts(step, epoch + 1), run.adapter(cfg.output_name))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return Result(run.adapter(cfg.output_name), files, step, step < total, unet)

