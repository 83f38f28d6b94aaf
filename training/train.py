"""train(): one readable pass from a project folder to a LoRA file (diffusers' LoRA example, tidied)."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from peft import get_peft_model_state_dict, set_peft_model_state_dict

from studio import dataset, protocol
from studio.diskspace import DiskFull, ensure_free
from studio.config import Precision, TrainConfig
from studio.project import Project, RunDir
from studio.protocol import Checkpoint, Progress, Status
from training import checkpoint, models, sampling
from training.data import TrainingData, split_validation
from training.events import Control, EventSink
from training.export import export_adapter
from training.loss import diffusion_loss, sample_noise
from training.metadata import TrainingFacts
from training.optim import build_optimizer, build_schedule
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


def train(project: Project, cfg: TrainConfig, run: RunDir, sink: EventSink,
          control: Control, resume: Path | None = None) -> Result:
    """Train; `resume` is a checkpoint folder (runs/<id>/checkpoints/step-N) to continue from."""
    started_at = time.time()
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg))
    main, device = accelerator.is_main_process, accelerator.device
    rank, world = accelerator.process_index, accelerator.num_processes
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg))
        log.info("training on the CPU with %d CPU thread(s)", torch.get_num_threads())
    else:
        log.info("training on %s with %s mixed precision", device, accelerator.mixed_precision)
    # Same seed everywhere: CPU reruns are bitwise identical; ranks differ only by data slice.
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # 1. Data (already checked by the CLI) and the base model.
    data_dir = project.resolve(cfg.dataset_dir)
    all_items = dataset.load(data_dir, cfg.exclude_images, cfg.repeats)
    manifest = checkpoint.dataset_manifest(all_items)
    items, held_out = split_validation(all_items, cfg)
    state = checkpoint.verify(resume) if resume else None
    if state:
        checkpoint.check_compatible(state, cfg, manifest)  # before the slow parts
    sink.emit(Status("loading_model", f"Loading {cfg.base_model}"))
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32)
    # Loaded straight in the compute precision: host RAM never holds an fp32 SDXL UNet (10 GB).
    base = models.load_base(cfg, project.root, unet_dtype=weight_dtype)
    prediction = base.prediction_type
    log.info("base model %s (%s, %s prediction)", base.name, base.version, prediction)

    # 2. Cache latents and text embeddings (main process first, the others then only read).
    sink.emit(Status("caching", f"Preparing {len(items)} images"))
    with accelerator.main_process_first():
        data = TrainingData(items, cfg, base, project.cache, device, on_progress=lambda d, t: (
            sink.emit(Status("caching", f"Encoded {d}/{t}", {"done": d, "total": t}))),
            train_text=cfg.train_text_encoder)
        val = TrainingData(held_out, cfg, base, project.cache, device, augment_captions=False) \
            if held_out else None
    sink.emit(Status("caching", f"Cache ready: {data.latent_counts.encoded} encoded, "
                                f"{data.latent_counts.reused} reused", dict(
                                    latents_encoded=data.latent_counts.encoded,
                                    latents_reused=data.latent_counts.reused,
                                    texts_encoded=data.text_counts.encoded,
                                    texts_reused=data.text_counts.reused,
                                    buckets=data.histogram(), caption_style=data.style,
                                    validation_images=len(held_out))))
    # SD scales latents to about unit variance (0.18215 for SD1.x); some VAEs also shift them.
    scaling = float(base.vae.config.scaling_factor)
    shift = float(base.vae.config.get("shift_factor") or 0.0)

    # 3. The LoRA on a frozen UNet. Frozen weights in half precision on the GPU save memory;
    #    the LoRA weights themselves stay fp32 (models.add_lora).
    unet = base.unet
    unet.to(device, dtype=weight_dtype)
    params = models.add_lora(unet, cfg)
    # Optional text-encoder LoRA (kohya's q/k/v/out/fc1/fc2), with its own learning rate.
    text_params = models.add_text_lora(base, cfg) if cfg.train_text_encoder else []
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    n_trainable = sum(p.numel() for p in params)
    n_unet = sum(p.numel() for p in unet.parameters())
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

    def unwrapped_text() -> tuple:
        return tuple(accelerator.unwrap_model(te) for te in wrapped_text)
    prompts = sampling.sample_prompts(cfg, data.captions)
    sink.emit(Status("training", f"Training {n_trainable:,} LoRA parameters "
                                 f"({100 * n_trainable / n_unet:.2f}% of the UNet) for {total} "
                                 f"steps", dict(trainable_params=n_trainable, unet_params=n_unet,
                                               steps=total, steps_per_epoch=per_epoch,
                                               images=len(items), prediction_type=prediction)))

    tags = dataset.tag_frequency(items, cfg.trigger_word)
    session_id = random.SystemRandom().randrange(2**31)

    def facts(step: int, epoch: int) -> TrainingFacts:
        return TrainingFacts(
            base_model_name=base.name, base_model_version=base.version,
            prediction_type=prediction, num_images=sum(it.repeats for it in items), steps=step,
            epochs=epoch, max_steps=total, tag_frequency=tags, dataset_name=data_dir.name,
            training_started_at=started_at, session_id=session_id, finished_at=time.time(),
            mixed_precision=accelerator.mixed_precision)

    lora_bytes = n_trainable * 4
    last_resume_point = time.monotonic()

    def resume_point(step: int) -> None:
        """Everything needed to continue exactly from here (issue 8)."""
        nonlocal last_resume_point
        if main:
            ensure_free(run.checkpoints, lora_bytes * 4)  # weights + 2 Adam moments + slack
            model = accelerator.unwrap_model(unet)
            lora = get_peft_model_state_dict(model)
            for i, te in enumerate(unwrapped_text()):
                lora.update({f"text_encoder{i}.{k}": v
                             for k, v in get_peft_model_state_dict(te).items()})
            checkpoint.save(run.checkpoints, lora, optimizer,
                            lr_schedule, checkpoint.rng_position(gen, rng, step, epoch, queue),
                            cfg, manifest, cfg.keep_checkpoints)
        last_resume_point = time.monotonic()
        accelerator.wait_for_everyone()

    def save_checkpoint(step: int, epoch: int) -> None:
        """A LoRA file for this step (to compare stages, e.g. in a grid) and a resume point."""
        if main:
            path = run.checkpoints / f"{cfg.output_name}-step{step:06d}.safetensors"
            ensure_free(run.checkpoints, lora_bytes)
            export_adapter(accelerator.unwrap_model(unet), cfg, facts(step, epoch), path,
                           unwrapped_text())
            sink.emit(Checkpoint(step=step, path=str(path)))
        resume_point(step)

    def samples(step: int, epoch: int) -> None:
        if main:
            sink.emit(Status("sampling", f"Rendering {len(prompts)} samples"))
            plain = base  # the pipeline needs the bare encoders, not their DDP wrappers
            if wrapped_text:
                tes = unwrapped_text()
                plain = dataclasses.replace(base, text_encoder=tes[0],
                                            text_encoder_2=tes[1] if len(tes) > 1 else None)
            paths = sampling.render(plain, accelerator.unwrap_model(unet), cfg, prompts,
                                    run.samples, step, device, weight_dtype)
            sink.emit(protocol.Sample(step=step, epoch=epoch, paths=[str(p) for p in paths],
                                      prompts=prompts))
            sink.emit(Status("training", "Training"))
        accelerator.wait_for_everyone()

    def validate(step: int, epoch: int) -> None:
        # Same images, noise and timesteps every time, so epochs compare honestly.
        gen = torch.Generator().manual_seed(cfg.seed + 999)
        n_t = noise_scheduler.config.num_train_timesteps
        fixed_t = torch.tensor([int(n_t * f) for f in (0.1, 0.3, 0.5, 0.7, 0.9)])
        model = accelerator.unwrap_model(unet)  # rank 0 alone: no DDP collectives
        model.eval()
        losses = []
        with torch.no_grad(), accelerator.autocast():
            for i in range(len(val.items)):
                lat = ((val.latents[i]["mean"][None] - shift) * scaling).repeat(len(fixed_t), 1,
                                                                                   1, 1)
                noise = torch.randn(lat.shape, generator=gen)
                text = val.text[i:i + 1].repeat(len(fixed_t), 1, 1)
                added = None if val.pooled is None else {
                    "text_embeds": val.pooled[i:i + 1].repeat(len(fixed_t), 1),
                    "time_ids": val.time_ids[i:i + 1].repeat(len(fixed_t), 1)}
                losses.append(float(diffusion_loss(
                    model, lat.to(device), text.to(device), noise_scheduler, prediction,
                    noise.to(device), fixed_t.to(device), 0.0, weight_dtype, added)))
        model.train()
        sink.emit(protocol.Validation(step=step, epoch=epoch, loss=sum(losses) / len(losses)))

    # 4. The loop. Randomness comes from one CPU generator so runs repeat exactly on any device.
    noise_scheduler = base.noise_scheduler
    n_timesteps = noise_scheduler.config.num_train_timesteps
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    rng = random.Random(cfg.seed + rank)
    watchdog = StepWatchdog(enabled=device.type == "cuda")
    unet.train()
    step, epoch, loss_sum, loss_n, t_first, bad_steps = 0, 0, 0.0, 0, None, 0
    queue: list[list[int]] = []
    if state:
        lora, pos = checkpoint.restore(resume, state, optimizer, lr_schedule)
        set_peft_model_state_dict(accelerator.unwrap_model(unet),
                                  {k: v for k, v in lora.items() if not k.startswith("text_")})
        for i, te in enumerate(unwrapped_text()):
            prefix = f"text_encoder{i}."
            set_peft_model_state_dict(te, {k[len(prefix):]: v for k, v in lora.items()
                                           if k.startswith(prefix)})
        gen.set_state(pos.gen_state)
        rng.setstate(pos.rng_state)
        step, epoch, queue = pos.step, pos.epoch, pos.queue
        sink.emit(Status("training", f"Resumed from step {step} of {total}",
                         {"resumed_from": step, "checkpoint": str(resume)}))
    while step < total:
        t_step = time.monotonic()
        finite = None
        for micro in range(cfg.gradient_accumulation_steps):
            if not queue:
                queue = data.epoch_batches(epoch, cfg.seed, cfg.batch_size, rank, world)
            idx = queue.pop(0)
            latents, text, added = data.batch(idx, gen, rng)
            latents = (latents - shift) * scaling
            noise = sample_noise(latents.shape, gen, cfg.noise_offset)
            timesteps = torch.randint(0, n_timesteps, (len(idx),), generator=gen)
            try:
                with accelerator.autocast():
                    loss = diffusion_loss(unet, latents.to(device), text.to(device),
                                          noise_scheduler, prediction, noise.to(device),
                                          timesteps.to(device), cfg.min_snr_gamma, weight_dtype,
                                          added)
                accelerator.backward(loss / cfg.gradient_accumulation_steps)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                lever, fix = memory_lever(cfg)
                raise OutOfMemory(f"The GPU ran out of memory at step {step + 1} (batch "
                                  f"{cfg.batch_size}, {cfg.resolution} px).", lever, fix) from None
            ok = torch.isfinite(loss.detach())
            finite = ok if finite is None else finite & ok
            loss_sum, loss_n = loss_sum + loss.detach(), loss_n + 1
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
            if bad_steps >= MAX_BAD_STEPS:
                resume_point(step)  # the weights are still those of the last good step
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

        last = step == total
        if world == 1:
            stopping = control.stop_requested  # no collective needed, and no device sync
        else:
            if control.stop_requested:
                accelerator.set_trigger()
            # check_trigger is an all-reduce (and a sync): every 10 steps is soon enough, and
            # every rank still stops at the same step.
            stopping = (step % 10 == 0 or last) and accelerator.check_trigger()
        shown_epoch = epoch if epoch_done else epoch + 1  # 1-based epoch this step belongs to
        if main and (last or stopping or sink.progress_due()):
            elapsed = time.monotonic() - t_first
            eta = elapsed / (step - 1) * (total - step) if step > 1 else None
            sink.progress(Progress(step=step, total=total, epoch=shown_epoch,
                                   loss=float(loss_sum) / max(loss_n, 1),
                                   lr=lr_schedule.get_last_lr()[0], eta_s=eta), force=True)
            loss_sum, loss_n = 0.0, 0
        if (epoch_done or last or stopping) and val is not None and main:
            validate(step, shown_epoch)  # each epoch's end, and the LoRA as finally saved
        if (cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0 and not last
                and not stopping) or control.take("save_now"):
            save_checkpoint(step, shown_epoch)
        elif stopping or (cfg.checkpoint_every_minutes and not last and time.monotonic() -
                          last_resume_point > 60 * cfg.checkpoint_every_minutes):
            resume_point(step)
        if control.take("sample_now") or (not stopping and (
                (cfg.sample_every_n_steps and step % cfg.sample_every_n_steps == 0) or
                (cfg.sample_every_n_epochs and epoch_done and epoch % cfg.sample_every_n_epochs
                 == 0) or (last and (cfg.sample_every_n_steps or cfg.sample_every_n_epochs)))):
            samples(step, shown_epoch)
        if stopping:
            break

    # 5. Save.
    sink.emit(Status("saving", "Saving the LoRA"))
    unet = accelerator.unwrap_model(unet)
    files: list[Path] = []
    if main:
        ensure_free(run.path, lora_bytes)
        files = export_adapter(unet, cfg, facts(step, max(epoch, 1)),
                               run.adapter(cfg.output_name), unwrapped_text())
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return Result(run.adapter(cfg.output_name), files, step, step < total, unet,
                  unwrapped_text())
