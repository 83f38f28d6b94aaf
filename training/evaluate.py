"""`python -m training evaluate RUN_DIR`: the report card of a run, one row per LoRA file plus the base model (issue 16).

For every row the same prompts are rendered at the same seeds through the Generate tab's code
path (training.generate): the held-out captions, then minimal pairs of them (one word swapped for
one the dataset uses in its place). They are judged three ways: style match of the held-out
captions' images against the held-out images (training.style_stats), prompt fidelity of every
image by the base model as a zero-shot classifier among its caption's minimal pairs
(training.zero_shot) and copy risk against the training images (training.copy_risk). The
validation loss comes from the run's events.jsonl. Every rule that turns these numbers into a
verdict is in studio.runs.report_card, which the window reads too.

The quick card (`--quick`) renders only the base model's row: every LoRA file whose step has
in-training samples (training/sampling.py, samples/step<N>-<k>.png) is judged on those, so the
prompts are the run's sample prompts at its sample seed and settings instead of the held-out
captions and their minimal pairs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from studio import config, dataset, protocol
from studio.runs import loras as lora_catalog
from studio.runs import report_card as rc
from studio.dataset.augment import full_caption, split_tags
from studio.errors import UserError
from studio.runs.project import Project, RunDir
from studio.protocol import GenerateRequest, Progress, Status
from studio.safetensors_header import read_header
from training import copy_risk, models, sampling, style_stats, zero_shot
from training.cache import encode_text, load_fitted
from training.data import sdxl_time_ids, split_validation
from training.events import Control, EventSink
from training.generate import Cancelled, Generator, pipeline_from_base, save_png

log = logging.getLogger("training")
FIRST_SEED = 1000  # evaluation seeds: FIRST_SEED, FIRST_SEED + 1, … for every row alike


class EvaluationError(UserError):
    field = "run_dir"


@dataclass
class Options:
    seeds: int = 1  # images per prompt
    variants: int = 2  # extra fidelity prompts per held-out caption (minimal pairs of it)
    # Training captions rendered too, where copies show (see _questions): a LoRA that memorised
    # its images redraws them under their own captions, rarely under others (issue 16's
    # memorising run: 0.84-0.90 of the SSIM ceiling under its training captions, 0.26 under the
    # held-out ones). On the demo they cost 2 of 11 images per row.
    copy_prompts: int = 2
    steps: int | None = None  # sampling steps (None: the run's sample_steps)
    cfg_scale: float | None = None  # (None: the run's sample_cfg_scale)
    sampler: str = "Euler"
    timesteps: int = 8  # noise levels the zero-shot classifier compares at
    margin: float = rc.DEFAULT_MARGIN
    device: str | None = None
    quick: bool = False  # reuse the in-training samples (see the module's docstring)


def lora_files(run: RunDir) -> list[Path]:
    """The run's LoRA files, oldest first: the same list the Generate tab offers
    (studio.runs.loras.run_loras: the run layout's own RunDir.lora_files() plus the final
    file), so the card has a row for exactly the files the artist can pick from."""
    found = lora_catalog.run_loras(run)
    return [f.path for f in found.checkpoints_oldest_first()] if found else []


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def without_trigger(caption: str, trigger: str) -> str:
    return ", ".join(t for t in split_tags(caption) if t != trigger)


def _distinct(texts) -> list[str]:
    return list(dict.fromkeys(texts))


class Evaluation:
    """One evaluation of one run; `run()` returns the card, or None when stopped."""

    def __init__(self, run_dir: Path, sink: EventSink, control: Control, opts: Options):
        self.run = RunDir(Path(run_dir).resolve())
        self.sink, self.control, self.opts = sink, control, opts
        if not self.run.config.is_file():
            raise EvaluationError(f"Not a run folder (no config.toml): {self.run.path}",
                                  "Give a folder inside the project's runs/ folder.")
        self.cfg = config.load(self.run.config)
        # RUN_DIR is PROJECT/runs/<id>: relative paths in the run's settings are the project's.
        self.project = Project(self.run.path.parent.parent)
        items = dataset.load(self.project.resolve(self.cfg.dataset_dir), self.cfg.exclude_images,
                             self.cfg.repeats)
        self.train_items, self.held_out = split_validation(items, self.cfg)
        if not self.held_out:
            raise UserError("This run held out no validation images, so there is nothing to "
                            "judge its style against (the training images would reward "
                            "copying).", "Set Validation images to 2 or more and train again.",
                            "validation_images")
        self.files = lora_files(self.run)
        if not self.files:
            raise EvaluationError(f"No LoRA files in {self.run.path}.",
                                  "Evaluate a run that finished or saved checkpoints.")
        # (epoch, step) each file was saved at, from its header (ss_epoch, ss_steps).
        self.saved_at = {path: (_int(meta.get("ss_epoch")), _int(meta.get("ss_steps")))
                         for path in self.files for meta in [read_header(path)[1]]}
        self.size = self.cfg.resolution
        if opts.quick:  # what the samples were made with (training/sampling.render)
            self.seeds, self.steps = [self.cfg.seed], self.cfg.sample_steps
            self.cfg_scale = self.cfg.sample_cfg_scale
        else:
            self.seeds = [FIRST_SEED + i for i in range(opts.seeds)]
            self.steps = opts.steps or self.cfg.sample_steps
            self.cfg_scale = opts.cfg_scale if opts.cfg_scale is not None else \
                self.cfg.sample_cfg_scale
        self._questions(items)
        self.reused = self._samples() if opts.quick else {}

    def _questions(self, items) -> None:
        """The prompts to render and, for each, the classifier's question (training.zero_shot):
        the held-out captions first (their images are also the style sample), then `variants`
        minimal pairs of each, rendered as prompts of their own, then `copy_prompts` training
        captions."""
        trigger = self.cfg.trigger_word
        # The classifier reads captions without the trigger word (the base model does not know
        # it) and without tags every caption shares (a trigger written into the caption files,
        # as in the demo set): they tell no prompt from another.
        tags = [split_tags(it.caption) for it in items]
        shared = [t for t in tags[0] if len(tags) > 1 and all(t in other for other in tags)]
        plain = [without_trigger(", ".join(t for t in split_tags(it.caption) if t not in shared),
                                 trigger) for it in items]
        subs = zero_shot.substitutes(plain)
        held = {id(it) for it in self.held_out}
        truths = [c for it, c in zip(items, plain) if id(it) in held]
        others = _distinct(c for it, c in zip(items, plain) if id(it) not in held)
        if self.opts.quick:
            self._sample_questions(shared, subs, others)
            return
        asked = [zero_shot.question(t, subs, others) for t in truths]
        for q in list(asked):
            asked += [zero_shot.question(v, subs, others)
                      for v in zero_shot.variants(q, self.opts.variants)]
        # A model replicates its training images when prompted with their captions (Somepalli
        # et al. 2023, "Understanding and Mitigating Copying in Diffusion Models"): a few
        # training captions, spread over the set, so the copy check sees where copies show.
        # They are not asked the classifier's question: fidelity is measured on the prompts
        # the margin was measured with, and the card costs 2 images a row less work.
        fresh = [c for c in others if c not in {q.prompts[0] for q in asked}]
        step = max(1, len(fresh) // max(1, self.opts.copy_prompts))
        self.copy_captions = fresh[::step][:self.opts.copy_prompts]
        self.questions = asked  # one per prompt rendered, the copy prompts excepted
        self.style_prompts = len(truths)  # the first prompts: the held-out captions
        self.prompts = [full_caption(", ".join([*shared, c]), trigger)
                        for c in [q.prompts[0] for q in asked] + self.copy_captions]
        self.candidates = _distinct(p for q in asked for p in q.prompts)

    def _sample_questions(self, shared: list[str], subs, others: list[str]) -> None:
        """Quick card: the run's sample prompts (training/sampling.sample_prompts, from the
        training captions as train.py passes them), those with the trigger word first, as they
        are the style sample; every one is asked the classifier's question."""
        trigger = self.cfg.trigger_word
        made = sampling.sample_prompts(self.cfg, self.train_items)
        triggered = [k for k, p in enumerate(made) if trigger and trigger in split_tags(p)]
        self.sample_index = triggered + [k for k in range(len(made)) if k not in triggered]
        self.prompts = [made[k] for k in self.sample_index]
        self.style_prompts = len(triggered) or len(made)
        self.copy_captions = []
        self.questions = [zero_shot.question(without_trigger(", ".join(
            t for t in split_tags(p) if t not in shared), trigger), subs, others)
            for p in self.prompts]
        self.candidates = _distinct(p for q in self.questions for p in q.prompts)

    def _samples(self) -> dict[Path, list[Path]]:
        """Quick card: each LoRA file's in-training samples, in prompt order, when its step
        has all of them."""
        found = {}
        for path in self.files:
            step = self.saved_at[path][1]
            files = [self.run.samples / f"step{step:06d}-{k}.png" for k in self.sample_index] \
                if step is not None else []
            if files and all(f.is_file() for f in files):
                found[path] = files
        return found

    # --- cost and progress ----------------------------------------------------------------

    @property
    def images_per_row(self) -> int:
        return len(self.prompts) * len(self.seeds)

    def cost(self) -> dict:
        """What the card will take: `images` to render (`reused_images` come from the run's
        samples) and the UNet passes of rendering and judging them."""
        rows = 1 + len(self.files)
        rendered = rows - len(self.reused)
        per_image = 2 if self.cfg_scale > 1 else 1
        return dict(rows=rows, images=rendered * self.images_per_row,
                    reused_images=len(self.reused) * self.images_per_row,
                    sampling_steps=self.steps,
                    unet_passes=rendered * self.images_per_row * (
                        self.steps * per_image) + len(self.seeds) * rows * self.opts.timesteps
                    * sum(len(q.prompts) for q in self.questions),
                    held_out=len(self.held_out), training_images=len(self.train_items),
                    candidates=len(self.candidates))

    def _tick(self, epoch: int | None) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        self.sink.progress(Progress(step=self.done, total=self.total, epoch=epoch or 0,
                                    eta_s=eta), force=self.done == self.total)

    # --- the work ---------------------------------------------------------------------------

    def run_all(self) -> rc.ReportCard | None:
        self.started = time.monotonic()
        cost = self.cost()
        # Every image is rendered, then the classifier judges all but the copy prompts'.
        self.done = 0
        self.total = cost["images"] + cost["rows"] * len(self.questions) * len(self.seeds)
        reused = f", {cost['reused_images']} from the training samples" \
            if self.opts.quick else ""
        self.sink.emit(Status("evaluating", f"Report card: {cost['rows'] - 1} LoRA file(s) and "
                                            f"the base model, {cost['images']} images x "
                                            f"{self.steps} steps{reused}", cost))
        self._load()
        rows: list[rc.Row] = []
        raw: list[dict[str, float]] = []
        val_by_step, val_by_epoch = rc.validation_losses(self.run.events)
        for path in [None, *self.files]:
            row, distances = self._row(path)
            if row is None:
                return None
            if row.step is not None:
                row.val_loss = val_by_step.get(row.step)
                if row.val_loss is None and row.epoch is not None and path == self._final():
                    row.val_loss = val_by_epoch.get(row.epoch)
            rows.append(row)
            raw.append(distances)
        base = rows[0]
        for row, distances in zip(rows, raw):
            row.style, row.style_parts = rc.relative_style(distances, raw[0])
            row.fidelity_vs_base = row.fidelity / base.fidelity if base.fidelity > 0 else None
        card = rc.ReportCard(
            base_model=self.base.name, rows=rows,
            recommendation=rc.recommend(rows, self.opts.margin),
            settings=dict(prompts=self.prompts, candidates=self.candidates, seeds=self.seeds,
                          steps=self.steps, cfg_scale=self.cfg_scale, sampler=self.opts.sampler,
                          resolution=self.size, timesteps=self.classifier_steps.tolist(),
                          questions=[q.prompts for q in self.questions],
                          copy_prompts=self.copy_captions, quick=self.opts.quick,
                          chance=sum(q.chance for q in self.questions) / len(self.questions),
                          margin=self.opts.margin,
                          copy_ssim=rc.COPY_SSIM, copy_latent=rc.COPY_LATENT,
                          held_out=[it.image.name for it in self.held_out],
                          device=str(self.device)),
            seconds=round(time.monotonic() - self.started, 1))
        rc.save(card, self.run.path)
        return card

    def _final(self) -> Path:
        return self.run.adapter(self.cfg.output_name)

    def _load(self) -> None:
        opts = self.opts
        self.device = torch.device(opts.device or ("cuda" if torch.cuda.is_available()
                                                   else "cpu"))
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.sink.emit(Status("loading_model", f"Loading {self.cfg.base_model}"))
        self.base = models.load_base(self.cfg, self.project.root)
        self.gen = Generator(pipeline_from_base(self.base).to(self.device, self.dtype),
                             self.base.name, self.cfg.base_model)
        self.sink.emit(Status("evaluating", f"Measuring {len(self.held_out)} held-out and "
                                            f"{len(self.train_items)} training images"))
        fit = (self.size, self.size)
        held = [load_fitted(it.image, fit) for it in self.held_out]
        self.reference = style_stats.StyleStats.of(style_stats.encode(self.base.vae, held))
        train = [load_fitted(it.image, fit) for it in self.train_items]
        self.train_set = copy_risk.TrainingSet(
            style_stats.to_pixels(train), style_stats.encode(self.base.vae, train).latents,
            copy_risk.vae_decoder(self.base.vae))
        with torch.no_grad():
            text, pooled = encode_text(self.base, self.candidates, self.device)
        time_ids = torch.tensor(sdxl_time_ids(fit, fit)) if pooled is not None else None
        self.classes = zero_shot.Candidates(text, pooled, time_ids)
        sched = self.base.noise_scheduler
        self.classifier_steps = zero_shot.timesteps(sched.config.num_train_timesteps,
                                                    self.opts.timesteps)
        vae = self.base.vae.config
        self.scaling = float(vae.scaling_factor)
        self.shift = float(vae.get("shift_factor") or 0.0)

    def _row(self, path: Path | None) -> tuple[rc.Row | None, dict[str, float]]:
        label = rc.BASE_LABEL if path is None else path.stem
        epoch, step = self.saved_at[path] if path else (None, None)
        self.sink.emit(Status("evaluating", f"Rendering {label}", {"file": str(path or "")}))
        images, saved = self._render(path, label, epoch)
        if images is None:
            return None, {}
        encoded = style_stats.encode(self.base.vae, images)
        # Style is judged on the held-out captions' images alone: the minimal-pair prompts
        # make colour pairs the held-out images may not have.
        styled = encoded.head(self.style_prompts * len(self.seeds))
        distances = style_stats.distance(style_stats.StyleStats.of(styled), self.reference)
        fidelity = self._classify(encoded.latents, epoch)
        if fidelity is None:
            return None, {}
        near = self.train_set.nearest(style_stats.to_pixels(images), encoded.latents)
        closest = max(near, key=lambda n: n.ssim)
        row = rc.Row(
            label=label, file=None if path is None else path.relative_to(self.run.path)
            .as_posix(), epoch=epoch, step=step, style_raw=distances,
            fidelity=fidelity,
            copy_flag=any(rc.is_near_copy(n.ssim, n.latent_ratio) for n in near),
            copy_ssim=closest.ssim, copy_latent=min(n.latent_ratio for n in near),
            copy_nearest=self.train_items[closest.index].image.name,
            images=[p.relative_to(self.run.path).as_posix() for p in saved])
        return row, distances

    def _render(self, path: Path | None, label: str, epoch: int | None):
        if path in self.reused:
            files = self.reused[path]
            return [load_fitted(f, (self.size, self.size)) for f in files], files
        self.gen.set_adapters([(path, 1.0)] if path else [])
        cancel = threading.Event()

        def on_step(index, step, total):
            if self.control.stop_requested:
                cancel.set()

        images, saved = [], []
        out = self.run.path / rc.IMAGES_DIR / label
        for k, prompt in enumerate(self.prompts):
            for seed in self.seeds:
                if self.control.stop_requested:
                    return None, []
                req = GenerateRequest(prompt=prompt, seed=seed, steps=self.steps,
                                      cfg_scale=self.cfg_scale, width=self.size,
                                      height=self.size, sampler=self.opts.sampler)
                try:
                    for _, _, image, text in self.gen.generate(req, on_step, cancel):
                        images.append(image)
                        saved.append(save_png(image, text, out / f"{k:02d}-s{seed}.png"))
                except Cancelled:
                    return None, []
                self._tick(epoch)
        return images, saved

    @torch.no_grad()
    def _classify(self, latents: torch.Tensor, epoch: int | None) -> float | None:
        """The mean score (training.zero_shot.score) of the images under the base model."""
        self.gen.set_adapters([])  # the base model judges every row, its LoRA switched off
        unet = self.gen.pipe.unet
        sched, prediction = self.base.noise_scheduler, self.base.prediction_type
        scores = []
        for i, latent in enumerate(latents[:len(self.questions) * len(self.seeds)]):
            if self.control.stop_requested:
                return None
            # The i-th image of every row gets the same noise, so rows differ only by image.
            gen = torch.Generator().manual_seed(FIRST_SEED + i)
            noise = torch.randn((len(self.classifier_steps), *latent.shape), generator=gen)
            scaled = ((latent - self.shift) * self.scaling).to(self.device)
            q = self.questions[i // len(self.seeds)]
            errs = zero_shot.errors(unet, scaled, self.classes.subset(
                [self.candidates.index(p) for p in q.prompts]), sched, prediction, noise,
                self.classifier_steps, self.dtype, per_step=True)
            scores.append(zero_shot.score(q, errs))
            self._tick(epoch)
        return sum(scores) / len(scores)


# --- The command ------------------------------------------------------------------------


def cli(args: argparse.Namespace) -> int:
    """Exit codes as `train`: 0 done or stopped, 1 failed, 2 bad input (nothing written)."""
    from training.train import cpu_threads

    sink = EventSink(stdout_events=args.json or not sys.stdout.isatty())
    sink.emit(protocol.Hello(pid=os.getpid(), command="evaluate", run_dir=str(args.run_dir)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)], force=True)
    control = Control(stdin_control=args.control_stdin)
    given = dict(seeds=args.seeds, variants=args.variants, copy_prompts=args.copy_prompts,
                 steps=args.steps, cfg_scale=args.cfg, timesteps=args.timesteps,
                 margin=args.margin, device=args.device, quick=args.quick)
    opts = Options(**{k: v for k, v in given.items() if v is not None})
    opts.seeds, opts.timesteps = max(1, opts.seeds), max(1, opts.timesteps)
    opts.variants, opts.copy_prompts = max(0, opts.variants), max(0, opts.copy_prompts)
    try:
        evaluation = Evaluation(args.run_dir, sink, control, opts)
        # The same thread count as training: CPU results repeat exactly run to run.
        torch.set_num_threads(cpu_threads(evaluation.cfg))
        card = evaluation.run_all()
    except (UserError, dataset.DatasetError, config.ConfigError) as exc:
        sink.emit(protocol.Error(message=str(exc), hint=getattr(exc, "hint", ""),
                                 field=getattr(exc, "field", "")))
        return 2
    except KeyboardInterrupt:
        sink.emit(protocol.Error(message="Evaluation aborted (Ctrl-C twice)."))
        return 1
    except Exception as exc:  # noqa: BLE001 - every failure reaches the GUI as an error event
        log.error("evaluation failed:\n%s", traceback.format_exc())
        sink.emit(protocol.Error(message=f"Evaluation failed: {type(exc).__name__}: {exc}"))
        return 1
    if card is None:
        sink.emit(protocol.Done(path="", stopped=True))
        return 0
    path = evaluation.run.path / rc.REPORT_FILE
    sink.emit(Status("evaluating", card.recommendation.reason,
                     {"recommended_epoch": card.recommendation.epoch,
                      "recommended_file": card.recommendation.file}))
    sink.emit(protocol.Done(path=str(path), files=[str(path)]))
    return 0
