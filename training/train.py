"""train(): one pass from a project's dataset to a LoRA file, read top to bottom like diffusers'
LoRA example: setup, data, LoRA, optimizer, resume, loop, save. The pieces live beside it: one
micro-batch in training/loss.py, what to do after a step in studio/step_plan.py, resume points in
training/resume.py, validation and samples in training/validation.py and training/sampling.py."""

from __future__ import annotations

import logging
import os
import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from studio import dataset, protocol, step_plan
from studio.machine import install_plan
from studio.config import Precision, TrainConfig
from studio.machine.diskspace import ensure_free
from studio.runs.project import Project, RunDir
from studio.protocol import LoraSaved, Progress, Status, WarningEvent
from training import data as training_data, models, quantize, sampling, speedups
from training.events import Control, EventSink
from training.export import export_adapter
from training.loss import LatentScale, train_step
from training.metadata import TrainingFacts
from training.optim import build_optimizer, build_schedule
from training.progress import Eta, Throttle
from training.resume import (Position, ResumePoint, dataset_manifest, restore, rng_position,
                             save_point)
from training.validation import validation_loss
from training.watchdog import StepWatchdog, cuda_memory

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


def out_of_memory(cfg: TrainConfig, where: str, step: int = 0) -> OutOfMemory:
    """The error for a GPU out-of-memory error in `where` ("caching", "text": encoding captions
    at a step, "step"), with the setting to change that helps there."""
    if where == "caching":
        smaller = max(256, cfg.resolution // 2 // 64 * 64)
        return OutOfMemory(f"The GPU ran out of memory while encoding the images for the cache "
                           f"({cfg.resolution} px).", f"Lower the resolution to {smaller}, or "
                           f"close other programs using the GPU.", {"resolution": smaller})
    if where == "text" and cfg.train_text_encoder:
        return OutOfMemory(f"The GPU ran out of memory while training the text encoders at step "
                           f"{step}.", "Turn off text-encoder training.",
                           {"train_text_encoder": False})
    if where == "text":
        return OutOfMemory(f"The GPU ran out of memory while encoding captions at step {step}: "
                           f"captions that change every step keep the text encoders on the GPU.",
                           "Turn off caption dropout, tag shuffling and tag dropout: captions "
                           "are then encoded once and the text encoders leave the GPU.",
                           {"caption_dropout": 0.0, "shuffle_tags": False, "tag_dropout": 0.0})
    lever, fix = memory_lever(cfg)
    return OutOfMemory(f"The GPU ran out of memory at step {step} (batch {cfg.batch_size}, "
                       f"{cfg.resolution} px).", lever, fix)


def extra_failed(cfg: TrainConfig, kind: str, step: int, exc: Exception) -> WarningEvent:
    """Samples or the validation loss failed at `step`: a warning, and training goes on (the
    trained weights are never lost to them; issue 13 item 2)."""
    what, off = {"sample": ("Rendering samples", "Samples every N epochs/steps to 0"),
                 "validation": ("Measuring the validation loss", "Validation images to 0")}[kind]
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return WarningEvent(message=f"{what} ran out of GPU memory at step {step}; skipped, "
                                    f"training goes on.",
                            hint=f"{memory_lever(cfg)[0]} Or set {off}.")
    return WarningEvent(message=f"{what} failed at step {step} ({type(exc).__name__}: {exc}); "
                                f"skipped, training goes on.",
                        hint=f"The LoRA trains and saves as usual. Details are in train.log in "
                             f"the run folder; set {off} to skip this.")


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
    # including_emulation=False: Turing cards (T4, RTX 20xx) report bf16 as supported through
    # emulation, but have no bf16 tensor cores, and the fast SDPA kernels need sm80+ for bf16
    # (issue 17 item 7); fp16 is their fast path.
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


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
    quantize.require(cfg, device)  # refused before seconds of loading and caching
    if main and (unused := install_plan.gpu_unused_warning(torch.cuda.is_available())):
        sink.emit(WarningEvent(message=unused, hint="Training goes on, on the CPU."))
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
    # The VAE in fp32 whatever the stored dtype (the SDXL VAE overflows in fp16; samples decode in
    # it), the text encoders in the compute dtype.
    base = models.load_base(cfg, project.root, unet_dtype=weight_dtype, text_dtype=weight_dtype)
    prediction = base.prediction_type
    log.info("base model %s (%s, %s prediction)", base.name, base.version, prediction)
    data, val = cache(accelerator, sink, cfg, base, project, train_items, held_out, device)
    scale = LatentScale.of(base.vae)
    prompts = sampling.sample_prompts(cfg, train_items)
    # With frozen, cached text the samples' prompts are encoded now, while the card holds no
    # UNet: samples then never bring the text encoders back, and the memory planner counts
    # samples without them (memory_model.CountedModel.sampling). Text that changes per step
    # keeps the encoders on the card anyway.
    # (Also without scheduled samples: the window can ask for samples at any step.)
    sample_text = sampling.encode_prompts(base, cfg, prompts, device) if (
        main and prompts and not training_data.live_text(data, val)) else None

    # 3. The LoRA on a frozen UNet. Frozen weights in half precision on the GPU save memory; the
    #    LoRA weights themselves stay fp32 (models.add_lora). Optionally a LoRA on the text
    #    encoders too (kohya's q/k/v/out/fc1/fc2), with its own learning rate.
    unet = base.unet
    unet.to(device, dtype=weight_dtype)
    quantize.quantize_unet(unet, cfg, device)  # before the LoRA: peft wraps quantized layers
    # On the device once: the loss indexes it every step (issue 17 item 10).
    base.noise_scheduler.alphas_cumprod = base.noise_scheduler.alphas_cumprod.to(device)
    params = models.add_lora(unet, cfg)
    text_params = models.add_text_lora(base, cfg) if cfg.train_text_encoder else []
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    speedups.apply(unet, cfg, device)  # CUDA only: regional compile, channels-last
    n_trainable = sum(p.numel() for p in params)
    n_unet = sum(p.numel() for p in unet.parameters())
    lora_bytes = n_trainable * 4

    # 4. Optimizer and LR schedule, wrapped by accelerate (DDP across GPUs, mixed precision).
    groups = [{"params": params}] + ([{"params": text_params, "lr": cfg.text_encoder_lr}]
                                     if text_params else [])
    optimizer = build_optimizer(cfg, groups, device)
    per_epoch, total = data.steps(cfg, world)
    total_epochs = -(-total // per_epoch)  # what the step plan's per-epoch LoRA files count
    # The schedule counts global steps and is stepped once per step. It does not go through
    # accelerator.prepare: accelerate's scheduler wrapper steps it once per process on every
    # call, so 2 processes ran a linear schedule over 8 steps down to 0 after step 3 (issue 17
    # item 4).
    lr_schedule = build_schedule(cfg, optimizer, total)
    trained_text = base.text_encoders if text_params else ()
    unet, optimizer, *wrapped_text = accelerator.prepare(unet, optimizer, *trained_text)
    if wrapped_text:  # encode through the (DDP-)wrapped encoders so their gradients sync
        base.text_encoder, base.text_encoder_2 = (wrapped_text + [None])[:2]
    params = params + text_params
    # The bare modules (no DDP wrapper), for saving, resume points, samples and validation.
    plain_unet = accelerator.unwrap_model(unet)
    plain_text = tuple(accelerator.unwrap_model(te) for te in wrapped_text)
    facts = run_facts(base, cfg, project, train_items, total, started_at,
                      accelerator.mixed_precision)
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
    if resume:  # each rank its own generator, Python RNG and batch queue
        pos = restore(resume, plain_unet, plain_text, optimizer, lr_schedule, rank, world)
        gen.set_state(pos.gen_state)
        rng.setstate(pos.rng_state)
        step, epoch, queue = pos.step, pos.epoch, pos.queue
        sink.emit(Status("training", f"Resumed from step {step} of {total}",
                         {"resumed_from": step, "resume_point": str(resume.path)}))

    # 6. The loop: a step accumulates micro-batches, is skipped if its loss is not finite,
    #    updates the LoRA, then does what the step plan says. The final LoRA is saved before
    #    the last step's validation and samples, which may fail without costing it.
    watchdog = StepWatchdog(enabled=device.type == "cuda", lever=memory_lever(cfg)[0],
                            memory=lambda: cuda_memory(device))
    unet.train()
    loss_sum, loss_n, bad_steps, files, saved, shown_loss = 0.0, 0, 0, [], False, 0.0
    last_resume_point = time.monotonic()
    eta = Eta(total, per_epoch, cfg, len(prompts), len(val.items) if val else 0)
    while step < total:
        t_step = time.monotonic()
        finite = None
        for _ in range(cfg.gradient_accumulation_steps):
            if not queue:
                queue = data.epoch_batches(epoch, cfg.seed, cfg.batch_size, rank, world)
            where = "text" if data.live_text else "step"
            try:
                batch = data.batch(queue.pop(0), gen, rng)
                where = "step"
                loss = train_step(accelerator, unet, batch, base.noise_scheduler, prediction,
                                  scale, gen, cfg.noise_offset, cfg.min_snr_gamma, weight_dtype,
                                  cfg.gradient_accumulation_steps)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                raise out_of_memory(cfg, where, step + 1) from None
            ok = torch.isfinite(loss)
            finite = ok if finite is None else finite & ok
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            epoch_done = not queue
            if epoch_done:
                epoch += 1
        # A non-finite loss would poison the weights: skip the update, and give up after several
        # in a row. This is the loop's one host-device sync per step, the price of never
        # applying a NaN update (the loss value itself is only read when reported). Every rank
        # decides together: DDP has already averaged one rank's NaN gradients into all of them.
        all_finite, stopping, minutes = agree(
            accelerator, finite, control.stop_requested,
            (time.monotonic() - last_resume_point) / 60)
        if not all_finite:
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
        eta.step_done(time.monotonic() - t_step)
        if warning := watchdog.observe(time.monotonic() - t_step):
            sink.emit(warning)

        act = step_plan.after_step(
            step, total, epoch, epoch_done, stopping, cfg, minutes,
            progress_due=sink.progress_due(), save_now=control.take("save_now"),
            sample_now=control.take("sample_now"), has_validation=val is not None,
            total_epochs=total_epochs)
        shown_epoch = step_plan.shown_epoch(epoch, epoch_done)
        # Reported before samples and validation too (they sync anyway), so the step shown and
        # its loss are this step's while they run.
        if main and (act.progress or act.sample or act.validate):
            shown_loss = float(loss_sum) / max(loss_n, 1)
            sink.progress(Progress(step=step, total=total, epoch=shown_epoch, loss=shown_loss,
                                   lr=lr_schedule.get_last_lr()[0], eta_s=eta.seconds_left(step)),
                          force=True)
            loss_sum, loss_n = 0.0, 0
        if (act.stop or step == total) and main:  # the trained weights first (issue 13)
            files, saved = save_final(sink, run, cfg, plain_unet, plain_text, facts, step,
                                      max(epoch, 1), lora_bytes), True
        if act.validate and main:  # rank 0 alone, on the bare UNet: no DDP collective
            validate(sink, eta, cfg, step, shown_epoch, lambda report: validation_loss(
                plain_unet, val, base.noise_scheduler, prediction, scale, cfg.seed + 999,
                device, weight_dtype, accelerator.autocast, on_progress=report))
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
                render_samples(sink, eta, cfg, prompts, step, shown_epoch, lambda report: (
                    sampling.render(base, plain_unet, cfg, prompts, run.samples, step, device,
                                    weight_dtype, plain_text, on_progress=report,
                                    embeds=sample_text)))
                if step < total and not act.stop:  # the ETA again, with the samples' cost
                    sink.emit(Status("training", "Training"))
                    sink.progress(Progress(step=step, total=total, epoch=shown_epoch,
                                           loss=shown_loss, lr=lr_schedule.get_last_lr()[0],
                                           eta_s=eta.seconds_left(step)), force=True)
            accelerator.wait_for_everyone()
        if act.stop:
            break

    # 7. Save the LoRA as trained (all of it, or up to the step a stop request came), unless the
    #    last step saved it already.
    if main and not saved:
        files = save_final(sink, run, cfg, plain_unet, plain_text, facts, step, max(epoch, 1),
                           lora_bytes)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return Result(run.adapter(cfg.output_name), files, step, step < total, plain_unet, plain_text)


def save_final(sink: EventSink, run: RunDir, cfg: TrainConfig, unet, text_encoders: tuple,
               facts: TrainingFacts, step: int, epoch: int, lora_bytes: int) -> list[Path]:
    sink.emit(Status("saving", "Saving the LoRA"))
    ensure_free(run.path, lora_bytes)
    return export_adapter(unet, cfg, facts.at(step, epoch), run.adapter(cfg.output_name),
                          text_encoders)


def cache(accelerator: Accelerator, sink: EventSink, cfg: TrainConfig, base, project: Project,
          train_items: list, held_out: list, device) -> tuple:
    """Cached latents and text embeddings of the training and validation sets (the main
    process first; the others then only read the cache)."""
    sink.emit(Status("caching", f"Preparing {len(train_items)} images"))
    with accelerator.main_process_first():
        try:
            data, val = training_data.build(
                train_items, held_out, cfg, base, project.cache, device,
                on_progress=lambda d, t: sink.emit(Status("caching", f"Encoded {d}/{t}",
                                                          {"done": d, "total": t})),
                train_text=cfg.train_text_encoder)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise out_of_memory(cfg, "caching") from None
    sink.emit(cache_ready(data, len(held_out)))
    return data, val


def run_facts(base, cfg: TrainConfig, project: Project, train_items: list, total: int,
              started_at: float, mixed_precision: str) -> TrainingFacts:
    """What the LoRA files' metadata says about this run (training/metadata.py)."""
    return TrainingFacts(
        base_model_name=base.name, base_model_version=base.version,
        prediction_type=base.prediction_type, num_images=sum(it.repeats for it in train_items),
        steps=0, epochs=0, max_steps=total,
        tag_frequency=dataset.tag_frequency(train_items, cfg.trigger_word),
        dataset_name=project.resolve(cfg.dataset_dir).name, training_started_at=started_at,
        session_id=random.SystemRandom().randrange(2**31), mixed_precision=mixed_precision)


def validate(sink: EventSink, eta: Eta, cfg: TrainConfig, step: int, epoch: int,
             measure) -> None:
    """The validation loss, with its own progress and timed for the ETA; a failure is a warning."""
    report = Throttle(lambda d, t: sink.emit(Status(
        "training", f"Measuring the validation loss: image {d} of {t}", {"done": d, "total": t})))
    with eta.timed("validation"):
        loss = guarded(sink, cfg, "validation", step, lambda: measure(report))
    if loss is not None:
        sink.emit(protocol.Validation(step=step, epoch=epoch, loss=loss))


def render_samples(sink: EventSink, eta: Eta, cfg: TrainConfig, prompts: list[str], step: int,
                   epoch: int, render) -> None:
    """Sample images, with their own progress and timed for the ETA; a failure is a warning."""
    sink.emit(Status("sampling", f"Rendering {len(prompts)} samples",
                     {"done": 0, "total": len(prompts) * cfg.sample_steps}))
    report = Throttle(lambda d, t: sink.emit(Status(
        "sampling", f"Rendering {len(prompts)} samples: step {d} of {t}",
        {"done": d, "total": t})))
    with eta.timed("sample"):
        paths = guarded(sink, cfg, "sample", step, lambda: render(report))
    if paths is not None:
        sink.emit(protocol.Sample(step=step, epoch=epoch, prompts=prompts,
                                  paths=[str(p) for p in paths]))


def guarded(sink: EventSink, cfg: TrainConfig, kind: str, step: int, work):
    """work() (samples, validation), or None and a warning when it fails: training goes on."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - any failure here must not cost the run
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        log.error("%s failed at step %d:\n%s", kind, step, traceback.format_exc())
        sink.emit(extra_failed(cfg, kind, step, exc))
        return None


def cache_ready(data: training_data.TrainingData, validation_images: int) -> Status:
    latents, texts = data.latent_counts, data.text_counts
    return Status("caching", f"Cache ready: {latents.encoded} encoded, {latents.reused} reused",
                  dict(latents_encoded=latents.encoded, latents_reused=latents.reused,
                       texts_encoded=texts.encoded, texts_reused=texts.reused,
                       buckets=data.histogram(), caption_style=data.style,
                       validation_images=validation_images))


def agree(accelerator: Accelerator, finite: torch.Tensor, stop: bool, minutes: float
          ) -> tuple[bool, bool, float]:
    """(every rank's loss is finite, a stop was asked for on any rank, the longest time since a
    resume point in minutes), the same on every rank. With several processes this is one
    all-reduce per step: each rank checking only its own loss let rank 0 apply the NaN
    gradients DDP had averaged in from rank 1, and the ranks then hung in different collectives
    (issue 17 item 6); the stop and the resume-point timer ride along, so all ranks also stop
    and save at the same step."""
    if accelerator.num_processes == 1:
        return bool(finite), stop, minutes
    host = torch.tensor([-float(stop), -minutes])
    flags = torch.cat([finite.float().reshape(1), host.to(finite.device)])
    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
    ok, neg_stop, neg_minutes = flags.tolist()
    return ok == 1.0, neg_stop < 0, -neg_minutes


def resume_point(accelerator: Accelerator, run: RunDir, trained: tuple, pos: Position,
                 cfg: TrainConfig, manifest: str) -> None:
    """A resume point written by rank 0 while the others wait, holding every rank's position
    (its own generator, Python RNG and batch queue). `trained`: (bare UNet, bare text
    encoders, optimizer, LR schedule)."""
    positions = [pos]
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        positions = [Position.from_json(p) for p in gather_object([pos.to_json()])]
    if accelerator.is_main_process:
        unet, text_encoders, optimizer, schedule = trained
        save_point(run, unet, text_encoders, optimizer, schedule, positions, cfg, manifest)
    accelerator.wait_for_everyone()

