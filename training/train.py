"""train(): one pass from a project's dataset to a LoRA file, read top to bottom like diffusers'
LoRA example: setup, data, LoRA, optimizer, resume, loop, save. The pieces live beside it: one
micro-batch in training/loss.py, what to do after a step in studio/step_plan.py, resume points in
training/resume.py, validation and samples in training/validation.py and training/sampling.py."""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from studio import dataset, protocol, step_plan
from studio.config import Precision, TrainConfig
from studio.diskspace import ensure_free
from studio.project import Project, RunDir
from studio.protocol import LoraSaved, Progress, Status
from training import data as training_data, models, sampling
from training.events import Control, EventSink
from training.export import export_adapter
from training.loss import LatentScale, train_step
from training.metadata import TrainingFacts
from training.optim import build_optimizer, build_schedule
from training.resume import (Position, ResumePoint, dataset_manifest, restore, rng_position,
                             save_point)
from training.validation import validation_loss
from training.watchdog import StepWatchdog

log = logging.getLogger("training")
MAX_BAD_STEPS = 5  # non-finite losses in a row before the run is given up


class TrainingDiverged(RuntimeError):
    hint = ("The loss became NaN or infinite several steps in a row. Lower the learning rate "
            "(for example by half), or use bf16 instead of fp16; then resume or start again.")


class OutOfMemory(RuntimeError):
    def __init__(self, message: str, hint: str, fix: dict):
        super().__init__(message)
        self.hint, self.fix = hint, fix


def memory_lever(cfg: TrainConfig) -> tuple[str, dict]:
    """The next setting to change after a GPU out-of-memory error, most effective first."""
    if not cfg.gradient_checkpointing:
        return "Turn on gradient checkpointing.", {"gradient_checkpointing": True}
    if cfg.batch_size > 1:
        return (f"Lower the batch size to {cfg.batch_size // 2}.",
                {"batch_size": cfg.batch_size // 2})
    if cfg.optimizer.value == "adamw":
        return "Use the Adafactor optimizer.", {"optimizer": "adafactor"}
    if cfg.resolution > 512:
        return "Lower the resolution to 512.", {"resolution": 512}
    return "Lower the rank, or close other programs using the GPU.", {"rank": max(1, cfg.rank // 2)}


@dataclass
class Result:
    adapter: Path
    files: list[Path]
    step: int
    stopped: bool
    unet: torch.nn.Module  # the trained UNet with its LoRA (for in-process tests)
    text_encoders: tuple = ()  # the trained text encoders, when they trained


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


def train(project: Project, cfg: TrainConfig, run: RunDir, items: list, sink: EventSink,
          control: Control, resume: ResumePoint | None = None) -> Result:
    """Train a LoRA on `items` (the dataset as the CLI loaded and checked it: decoded once) into
    the run folder; `resume`: a verified resume point, already checked against `cfg` and
    `items`, to continue exactly from."""
    # 1. Setup: one process per GPU (or the CPU), the compute precision, the same seed everywhere
    #    (CPU reruns are bitwise identical; ranks differ only by their slice of the data).
    started_at = time.time()
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg))
    main, device = accelerator.is_main_process, accelerator.device
    rank, world = accelerator.process_index, accelerator.num_processes
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg))
        log.info("training on the CPU with %d CPU thread(s)", torch.get_num_threads())
    else:
        log.info("training on %s with %s mixed precision", device, accelerator.mixed_precision)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32)

    # 2. Data: the base model (loaded straight in the compute precision, so host RAM never holds
    #    an fp32 SDXL UNet), then cached latents and text embeddings (the main process first,
    #    the others then only read the cache).
    manifest = dataset_manifest(items)  # what a resume point written by this run must match
    train_items, held_out = training_data.split_validation(items, cfg)
    sink.emit(Status("loading_model", f"Loading {cfg.base_model}"))
    base = models.load_base(cfg, project.root, unet_dtype=weight_dtype)
    prediction = base.prediction_type
    log.info("base model %s (%s, %s prediction)", base.name, base.version, prediction)
    sink.emit(Status("caching", f"Preparing {len(train_items)} images"))
    with accelerator.main_process_first():
        data, val = training_data.build(
            train_items, held_out, cfg, base, project.cache, device,
            on_progress=lambda d, t: sink.emit(Status("caching", f"Encoded {d}/{t}",
                                                      {"done": d, "total": t})),
            train_text=cfg.train_text_encoder)
    sink.emit(cache_ready(data, len(held_out)))
    scale = LatentScale.of(base.vae)

    # 3. The LoRA on a frozen UNet. Frozen weights in half precision on the GPU save memory; the
    #    LoRA weights themselves stay fp32 (models.add_lora). Optionally a LoRA on the text
    #    encoders too (kohya's q/k/v/out/fc1/fc2), with its own learning rate.
    unet = base.unet
    unet.to(device, dtype=weight_dtype)
    params = models.add_lora(unet, cfg)
    text_params = models.add_text_lora(base, cfg) if cfg.train_text_encoder else []
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    n_trainable = sum(p.numel() for p in params)
    n_unet = sum(p.numel() for p in unet.parameters())
    lora_bytes = n_trainable * 4

    # 4. Optimizer and LR schedule, wrapped by accelerate (DDP across GPUs, mixed precision).
    groups = [{"params": params}] + ([{"params": text_params, "lr": cfg.text_encoder_lr}]
                                     if text_params else [])
    optimizer = build_optimizer(cfg, groups, device)
    per_epoch, total = data.steps(cfg, world)
    lr_schedule = build_schedule(cfg, optimizer, total)
    trained_text = base.text_encoders if text_params else ()
    unet, optimizer, lr_schedule, *wrapped_text = accelerator.prepare(unet, optimizer,
                                                                       lr_schedule, *trained_text)
    if wrapped_text:  # encode through the (DDP-)wrapped encoders so their gradients sync
        base.text_encoder, base.text_encoder_2 = (wrapped_text + [None])[:2]
    params = params + text_params
    # The bare modules (no DDP wrapper), for saving, resume points, samples and validation.
    plain_unet = accelerator.unwrap_model(unet)
    plain_text = tuple(accelerator.unwrap_model(te) for te in wrapped_text)
    prompts = sampling.sample_prompts(cfg, data.captions)
    facts = TrainingFacts(
        base_model_name=base.name, base_model_version=base.version, prediction_type=prediction,
        num_images=sum(it.repeats for it in train_items), steps=0, epochs=0, max_steps=total,
        tag_frequency=dataset.tag_frequency(train_items, cfg.trigger_word),
        dataset_name=project.resolve(cfg.dataset_dir).name, training_started_at=started_at,
        session_id=random.SystemRandom().randrange(2**31),
        mixed_precision=accelerator.mixed_precision)
    sink.emit(Status("training", f"Training {n_trainable:,} LoRA parameters "
                                 f"({100 * n_trainable / n_unet:.2f}% of the UNet) for {total} "
                                 f"steps", dict(trainable_params=n_trainable, unet_params=n_unet,
                                               steps=total, steps_per_epoch=per_epoch,
                                               images=len(train_items),
                                               prediction_type=prediction)))

    # 5. Resume. All randomness of the loop comes from one CPU torch generator and one Python
    #    RNG, so a run repeats exactly on any device, and a resume point continues it exactly.
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    rng = random.Random(cfg.seed + rank)
    step, epoch, queue = 0, 0, []  # optimizer steps done, epochs done, this epoch's batches left
    if resume:
        pos = restore(resume, plain_unet, plain_text, optimizer, lr_schedule)
        gen.set_state(pos.gen_state)
        rng.setstate(pos.rng_state)
        step, epoch, queue = pos.step, pos.epoch, pos.queue
        sink.emit(Status("training", f"Resumed from step {step} of {total}",
                         {"resumed_from": step, "resume_point": str(resume.path)}))

    # 6. The loop: a step accumulates micro-batches, is skipped if its loss is not finite,
    #    updates the LoRA, then does what the step plan says.
    watchdog = StepWatchdog(enabled=device.type == "cuda")
    unet.train()
    loss_sum, loss_n, t_first, bad_steps = 0.0, 0, None, 0
    last_resume_point = time.monotonic()
    while step < total:
        t_step = time.monotonic()
        finite = None
        for _ in range(cfg.gradient_accumulation_steps):
            if not queue:
                queue = data.epoch_batches(epoch, cfg.seed, cfg.batch_size, rank, world)
            batch = data.batch(queue.pop(0), gen, rng)
            try:
                loss = train_step(accelerator, unet, batch, base.noise_scheduler, prediction,
                                  scale, gen, cfg.noise_offset, cfg.min_snr_gamma, weight_dtype,
                                  cfg.gradient_accumulation_steps)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                raise out_of_memory(cfg, step + 1) from None
            ok = torch.isfinite(loss)
            finite = ok if finite is None else finite & ok
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            epoch_done = not queue
            if epoch_done:
                epoch += 1
        # A non-finite loss would poison the weights: skip the update, and give up after several
        # in a row. This is the loop's one host-device sync per step, the price of never
        # applying a NaN update (the loss value itself is only read when reported).
        if not bool(finite):
            optimizer.zero_grad(set_to_none=True)
            loss_sum, loss_n, bad_steps = 0.0, 0, bad_steps + 1
            sink.emit(protocol.WarningEvent(
                message=f"Step {step + 1}: the loss is not finite; the step was skipped.",
                hint=TrainingDiverged.hint))
            if bad_steps >= MAX_BAD_STEPS:  # the weights are still those of the last good step
                resume_point(accelerator, run, (plain_unet, plain_text, optimizer, lr_schedule),
                             rng_position(gen, rng, step, epoch, queue), cfg, manifest)
                raise TrainingDiverged(f"The loss was not finite for {bad_steps} steps in a row "
                                       f"(after step {step}); training stopped.")
            continue
        bad_steps = 0
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        t_first = t_first or time.monotonic()
        if warning := watchdog.observe(time.monotonic() - t_step):
            sink.emit(warning)

        act = step_plan.after_step(
            step, total, epoch, epoch_done, stop_requested(accelerator, control, step, total),
            cfg, (time.monotonic() - last_resume_point) / 60, progress_due=sink.progress_due(),
            save_now=control.take("save_now"), sample_now=control.take("sample_now"),
            has_validation=val is not None, total_epochs=-(-total // per_epoch))
        shown_epoch = step_plan.shown_epoch(epoch, epoch_done)
        if act.progress and main:
            elapsed = time.monotonic() - t_first
            eta = elapsed / (step - 1) * (total - step) if step > 1 else None
            sink.progress(Progress(step=step, total=total, epoch=shown_epoch,
                                   loss=float(loss_sum) / max(loss_n, 1),
                                   lr=lr_schedule.get_last_lr()[0], eta_s=eta), force=True)
            loss_sum, loss_n = 0.0, 0
        if act.validate and main:  # rank 0 alone, on the bare UNet: no DDP collective
            sink.emit(protocol.Validation(step=step, epoch=shown_epoch, loss=validation_loss(
                plain_unet, val, base.noise_scheduler, prediction, scale, cfg.seed + 999, device,
                weight_dtype, accelerator.autocast)))
        if act.save_lora and main:  # a LoRA file to compare stages (e.g. in a grid)
            path = run.loras / f"{cfg.output_name}-step{step:06d}.safetensors"
            ensure_free(run.path, lora_bytes)
            export_adapter(plain_unet, cfg, facts.at(step, shown_epoch), path, plain_text)
            sink.emit(LoraSaved(step=step, path=str(path)))
        if act.resume_point:
            resume_point(accelerator, run, (plain_unet, plain_text, optimizer, lr_schedule),
                         rng_position(gen, rng, step, epoch, queue), cfg, manifest)
            last_resume_point = time.monotonic()
        if act.sample:
            if main:
                sink.emit(Status("sampling", f"Rendering {len(prompts)} samples"))
                paths = sampling.render(base, plain_unet, cfg, prompts, run.samples, step, device,
                                        weight_dtype, plain_text)
                sink.emit(protocol.Sample(step=step, epoch=shown_epoch, prompts=prompts,
                                          paths=[str(p) for p in paths]))
                sink.emit(Status("training", "Training"))
            accelerator.wait_for_everyone()
        if act.stop:
            break

    # 7. Save the LoRA as trained (all of it, or up to the step a stop request came).
    sink.emit(Status("saving", "Saving the LoRA"))
    files: list[Path] = []
    if main:
        ensure_free(run.path, lora_bytes)
        files = export_adapter(plain_unet, cfg, facts.at(step, max(epoch, 1)),
                               run.adapter(cfg.output_name), plain_text)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return Result(run.adapter(cfg.output_name), files, step, step < total, plain_unet, plain_text)


def cache_ready(data: training_data.TrainingData, validation_images: int) -> Status:
    latents, texts = data.latent_counts, data.text_counts
    return Status("caching", f"Cache ready: {latents.encoded} encoded, {latents.reused} reused",
                  dict(latents_encoded=latents.encoded, latents_reused=latents.reused,
                       texts_encoded=texts.encoded, texts_reused=texts.reused,
                       buckets=data.histogram(), caption_style=data.style,
                       validation_images=validation_images))


def stop_requested(accelerator: Accelerator, control: Control, step: int, total: int) -> bool:
    """Whether every rank stops after this step (a stop asked for on any rank)."""
    if accelerator.num_processes == 1:
        return control.stop_requested  # no collective needed, and no device sync
    if control.stop_requested:
        accelerator.set_trigger()
    # check_trigger is an all-reduce (and a sync): every 10 steps is soon enough, and every rank
    # still stops at the same step.
    return (step % 10 == 0 or step == total) and accelerator.check_trigger()


def resume_point(accelerator: Accelerator, run: RunDir, trained: tuple, pos: Position,
                 cfg: TrainConfig, manifest: str) -> None:
    """A resume point written by rank 0 while the others wait. `trained`: (bare UNet, bare
    text encoders, optimizer, LR schedule)."""
    if accelerator.is_main_process:
        unet, text_encoders, optimizer, schedule = trained
        save_point(run, unet, text_encoders, optimizer, schedule, pos, cfg, manifest)
    accelerator.wait_for_everyone()


def out_of_memory(cfg: TrainConfig, step: int) -> OutOfMemory:
    lever, fix = memory_lever(cfg)
    return OutOfMemory(f"The GPU ran out of memory at step {step} (batch {cfg.batch_size}, "
                       f"{cfg.resolution} px).", lever, fix)
