"""Image generation with LoRAs: the one code path for the Generate tab, grids, samples and benchmarks.

A Generator keeps one base pipeline loaded; adapters are loaded once per file and switched by
strength (diffusers `set_adapters`), so changing LoRAs or strengths never reloads the base model.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UniPCMultistepScheduler)
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from studio import atomic, infotext
from studio.protocol import GenerateRequest
from studio.safetensors_header import read_header
from training.models import load_base, resolve_folder

# A1111 sampler names -> diffusers schedulers. Each is built with from_config(base scheduler) so
# the model's prediction type, zero-terminal-SNR rescaling and timestep spacing carry over.
SAMPLERS = {
    "Euler": EulerDiscreteScheduler,
    "Euler a": EulerAncestralDiscreteScheduler,
    "DPM++ 2M": DPMSolverMultistepScheduler,
    "DDIM": DDIMScheduler,
    "UniPC": UniPCMultistepScheduler,
}


class Cancelled(Exception):
    pass


@dataclass
class Adapter:
    path: Path
    name: str  # adapter name inside the pipeline
    title: str  # what prompts and infotext call it (file stem)
    short_hash: str  # A1111/Civitai "AutoV3": 12 hex of the data-section SHA-256


def lora_short_hash(path: Path) -> str:
    _, meta = read_header(path)
    if len(meta.get("sshs_model_hash", "")) == 64:
        return meta["sshs_model_hash"][:12]
    from studio.safetensors_header import data_section_sha256
    return data_section_sha256(path)[:12]


def inference_scheduler(base):
    """The model's own inference scheduler (DDIM, PNDM, Euler… as its config names it), built
    from the training scheduler's config so a prediction-type override carries over."""
    import diffusers

    path = base.folder / "scheduler" / "scheduler_config.json"
    try:
        name = json.loads(path.read_text())["_class_name"]
        return getattr(diffusers, name).from_config(base.noise_scheduler.config)
    except (OSError, ValueError, KeyError, AttributeError):
        return base.noise_scheduler


def pipeline_from_base(base, unet=None):
    """A Stable Diffusion (XL) pipeline around loaded components (`unet` replaces the base UNet,
    e.g. the one being trained), so previews use exactly the inference code path."""
    parts = dict(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                 unet=unet or base.unet, scheduler=inference_scheduler(base))
    if base.is_sdxl:
        return StableDiffusionXLPipeline(**parts, text_encoder_2=base.text_encoder_2,
                                         tokenizer_2=base.tokenizer_2)
    return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def load_pipeline(base_model: str, project_root: Path, device: torch.device):
    """Any base model the trainer accepts (folder, single file, Hub cache), ready to generate."""
    from studio.config import TrainConfig

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    # Loaded straight in the target dtype: loading fp32 and casting after held an SDXL model in
    # fp32 on the host (~13.6 GiB) on the way to a GPU in fp16 (issue 17 item 10). The SDXL
    # pipeline still decodes in fp32 where its VAE asks for it (force_upcast).
    base = load_base(TrainConfig(base_model=base_model), project_root, unet_dtype=dtype,
                     text_dtype=dtype, vae_dtype=dtype)
    return pipeline_from_base(base).to(device, dtype)


class Generator:
    def __init__(self, pipe: StableDiffusionPipeline, model_name: str, base_model: str = "",
                 live_adapter: tuple[str, float] | None = None):
        """`live_adapter`: (title, strength) of a LoRA already inside the pipeline's UNet (the
        one being trained), so sample infotext names it."""
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.model_name = model_name
        self.base_model = base_model
        self.base_folder: Path | None = None  # the model's folder or file (merge never writes there)
        self.live_adapter = live_adapter
        self.load_seconds = 0.0
        self.adapters: dict[Path, Adapter] = {}
        self.active: list[tuple[Adapter, float]] = []

    @classmethod
    def load(cls, base_model: str, project_root: Path = Path.cwd(),
             device: str | None = None) -> "Generator":
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        started = time.monotonic()
        folder, name = resolve_folder(base_model, project_root)
        gen = cls(load_pipeline(base_model, project_root, dev), name, base_model)
        gen.load_seconds = time.monotonic() - started
        gen.base_folder = folder
        return gen

    def set_adapters(self, adapters: list[tuple[Path, float]]) -> None:
        """Make exactly these (file, strength) pairs active; load files not seen before."""
        for path, _ in adapters:
            path = Path(path).resolve()
            if path not in self.adapters:
                if path.suffix.lower() != ".safetensors":
                    raise ValueError(f"{path.name}: only .safetensors LoRA files are opened (other "
                                     f"formats can run code when loaded).")
                read_header(path)  # bounded header check: a damaged file is named, not loaded
                name = f"lora{len(self.adapters)}"
                self.pipe.load_lora_weights(str(path.parent), weight_name=path.name,
                                            adapter_name=name)
                self.adapters[path] = Adapter(path, name, path.stem, lora_short_hash(path))
        wanted = {Path(p).resolve(): float(w) for p, w in adapters}
        self.active = [(self.adapters[p], w) for p, w in wanted.items()]
        live = [(a.name, w) for a, w in self.active if w != 0]
        if live:
            # Only adapters with a non-zero strength run: a loaded adapter at weight 0 still
            # costs its matmuls (53 vs 39 ms per tiny image, benchmarks/preview.py).
            self.pipe.enable_lora()
            self.pipe.set_adapters([n for n, _ in live], [w for _, w in live])
        elif self.adapters:
            self.pipe.disable_lora()  # the base model's image (tests compare it pixel for pixel)

    @staticmethod
    def _text(req: GenerateRequest) -> dict:
        return dict(prompt=infotext.strip_lora_tags(req.prompt),
                    negative_prompt=req.negative_prompt or None)

    def encode(self, req: GenerateRequest, device: torch.device) -> dict:
        """The text conditioning `generate` would compute for `req` (the pipeline's own
        encode_prompt, on `device`), to pass back as its `embeds`: training encodes its sample
        prompts once while the card is free, so samples need no text encoder on it."""
        text, guided = self._text(req), req.cfg_scale > 1  # as the pipelines decide CFG
        if isinstance(self.pipe, StableDiffusionXLPipeline):
            pos, neg, pooled, neg_pooled = self.pipe.encode_prompt(
                text["prompt"], device=device, num_images_per_prompt=1,
                do_classifier_free_guidance=guided, negative_prompt=text["negative_prompt"])
            return dict(prompt_embeds=pos, negative_prompt_embeds=neg,
                        pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=neg_pooled)
        pos, neg = self.pipe.encode_prompt(text["prompt"], device, 1, guided,
                                           text["negative_prompt"])
        return dict(prompt_embeds=pos, negative_prompt_embeds=neg)

    def generate(self, req: GenerateRequest,
                 on_step: Callable[[int, int, int], None] | None = None,
                 cancel: threading.Event | None = None, embeds: dict | None = None
                 ) -> Iterator[tuple[int, int, Image.Image, str]]:
        """Yield (index, seed, image, infotext) per image; `on_step(index, step, total)` after each
        denoising step; raises Cancelled when `cancel` is set mid-way. `embeds`: the prompt
        already encoded (`encode`), so the text encoders do not run."""
        if req.adapters is not None:
            self.set_adapters([(Path(p), w) for p, w in req.adapters])
        base_scheduler = self.pipe.scheduler
        # The request checked the name against protocol.SAMPLERS (a test keeps them equal).
        self.pipe.scheduler = SAMPLERS[req.sampler].from_config(base_scheduler.config)
        try:
            for index in range(req.count):
                seed = req.seed + index

                def step_end(pipe, step, timestep, kwargs, index=index):
                    if on_step:
                        on_step(index, step + 1, req.steps)
                    if cancel is not None and cancel.is_set():
                        # Out at once: diffusers' `_interrupt` skips the remaining steps but still
                        # VAE-decodes, seconds at large sizes (issue 13).
                        raise Cancelled()
                    return kwargs

                image = self.pipe(
                    **(embeds if embeds is not None else self._text(req)),
                    num_inference_steps=req.steps, guidance_scale=req.cfg_scale,
                    width=req.width, height=req.height,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    callback_on_step_end=step_end).images[0]
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                yield index, seed, image, infotext.format(self.parameters(req, seed))
        finally:
            self.pipe.scheduler = base_scheduler

    def parameters(self, req: GenerateRequest, seed: int) -> infotext.Parameters:
        active = [(a, w) for a, w in self.active if w != 0]
        live = (self.live_adapter,) if self.live_adapter else ()
        return infotext.Parameters(
            prompt=req.prompt, negative_prompt=req.negative_prompt, steps=req.steps,
            sampler=req.sampler, cfg_scale=req.cfg_scale, seed=seed, width=req.width,
            height=req.height, model=self.model_name,
            loras=tuple((a.title, w) for a, w in active) + live,
            lora_hashes=tuple((a.title, a.short_hash) for a, _ in active))


def save_png(image: Image.Image, text: str, path: Path) -> Path:
    """PNG with the A1111 `parameters` chunk, written atomically."""
    info = PngInfo()
    info.add_text("parameters", text)
    with atomic.atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path
