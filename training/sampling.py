"""Sample images during training, through the same Generator (and scheduler) as the Generate tab.

Previews rendered by a different code path than real inference are a top complaint about other
trainers (anchors.md); here the training UNet with its live LoRA is wrapped in a normal
StableDiffusionPipeline and rendered by training.generate.Generator.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from studio.dataset.augment import full_caption
from studio.config import TrainConfig
from studio.protocol import GenerateRequest
from training.generate import Generator, pipeline_from_base, save_png


def sample_prompts(cfg: TrainConfig, captions: list[str]) -> list[str]:
    """Each prompt with the trigger word and, as a control, without it."""
    base = list(cfg.sample_prompts) or list(dict.fromkeys(c for c in captions if c))[:2] or [""]
    prompts = []
    for prompt in base:
        bare = ", ".join(t for t in (p.strip() for p in prompt.split(","))
                         if t and t != cfg.trigger_word)
        if cfg.trigger_word:
            prompts.append(full_caption(bare, cfg.trigger_word))
        prompts.append(bare)
    return list(dict.fromkeys(prompts))


@torch.no_grad()
def render(base, unet, cfg: TrainConfig, prompts: list[str], out_dir: Path, step: int,
           device: torch.device, dtype: torch.dtype, text_encoders: tuple = ()) -> list[Path]:
    """One image per prompt with the fixed sample seed; the UNet is left as it was found.
    `text_encoders`: the bare trained encoders when they train (the base model then holds their
    DDP wrappers, which a pipeline cannot use)."""
    if text_encoders:
        base = dataclasses.replace(base, text_encoder=text_encoders[0], text_encoder_2=(
            text_encoders[1] if len(text_encoders) > 1 else None))
    was_training = unet.training
    text_device = next(base.text_encoder.parameters()).device
    unet.eval()
    base.vae.to(device)
    for encoder in base.text_encoders:
        encoder.to(device)
    generator = Generator(pipeline_from_base(base, unet), base.name,
                          live_adapter=(cfg.output_name, 1.0))
    paths = []
    try:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            for k, prompt in enumerate(prompts):
                req = GenerateRequest(prompt=prompt, seed=cfg.seed, steps=cfg.sample_steps,
                                      cfg_scale=cfg.sample_cfg_scale, width=cfg.resolution,
                                      height=cfg.resolution)
                for _, _, image, text in generator.generate(req):
                    paths.append(save_png(image, text, out_dir / f"step{step:06d}-{k}.png"))
    finally:
        base.vae.to("cpu")
        for encoder in base.text_encoders:
            encoder.to(text_device)
        unet.train(was_training)
    return paths
