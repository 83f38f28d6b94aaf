"""Sample images during training, through the same Generator (and scheduler) as the Generate tab.

Previews rendered by a different code path than real inference are a top complaint about other
trainers (anchors.md); here the training UNet with its live LoRA is wrapped in a normal
StableDiffusionPipeline and rendered by training.generate.Generator.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from studio.dataset.augment import full_caption
from studio.config import TrainConfig
from studio.machine.memory_fit import sample_vae_tile
from studio.protocol import GenerateRequest
from training.generate import Generator, pipeline_from_base, save_png


def sample_prompts(cfg: TrainConfig, items: list) -> list[str]:
    """The prompts a run samples, from its training items (studio.dataset Items): each with the
    trigger word and, as a control, without it. Training, `check` and the quick report card ask
    this one function."""
    captions = (full_caption(it.caption, cfg.trigger_word) for it in items)
    base = list(cfg.sample_prompts) or list(dict.fromkeys(c for c in captions if c))[:2] or [""]
    prompts = []
    for prompt in base:
        bare = ", ".join(t for t in (p.strip() for p in prompt.split(","))
                         if t and t != cfg.trigger_word)
        if cfg.trigger_word:
            prompts.append(full_caption(bare, cfg.trigger_word))
        prompts.append(bare)
    return list(dict.fromkeys(prompts))


@contextmanager
def patched(module, name: str, wrap):
    """`module.<name>` replaced by wrap(original) inside the block, restored after."""
    own = module.__dict__.get(name)
    setattr(module, name, wrap(getattr(module, name)))
    try:
        yield
    finally:
        if own is None:
            delattr(module, name)  # the class's method again
        else:
            setattr(module, name, own)


def autocast_only(device_type: str, dtype: torch.dtype):
    """Wrap a forward so it alone runs under autocast."""
    def wrap(forward):
        def autocast_forward(*args, **kwargs):
            with torch.autocast(device_type, dtype=dtype):
                return forward(*args, **kwargs)
        return autocast_forward
    return wrap


@contextmanager
def vae_tiles(vae, width: int, height: int):
    """Inside the block the VAE decodes a large sample in tiles (studio.machine.memory_fit
    .sample_vae_tile: the rule the memory planner counts the sampling peak with), so decoding
    an SDXL 1024 px sample needs a quarter of the memory; restored after."""
    tile = sample_vae_tile(width, height)
    if not tile:
        yield
        return
    names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size")
    old = {n: getattr(vae, n, None) for n in names}
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = True, tile, tile // scale
    try:
        yield
    finally:
        for n, v in old.items():
            setattr(vae, n, v)


def visiting(module, device: torch.device):
    """Wrap a forward so the module is on `device` only while it runs, then back where it was:
    how `render`, when given no `embeds`, runs text encoders kept off the card once their
    outputs are cached."""
    def wrap(forward):
        def visiting_forward(*args, **kwargs):
            home = next(module.parameters()).device
            module.to(device)
            try:
                return forward(*args, **kwargs)
            finally:
                module.to(home)
        return visiting_forward
    return wrap


def in_vae_dtype(vae):
    """Wrap the VAE's decode so it runs in the VAE's own dtype (fp32 for training) without
    autocast, whatever dtype the UNet's latents come in."""
    def wrap(decode):
        def own_dtype_decode(z, *args, **kwargs):
            with torch.autocast(z.device.type, enabled=False):
                return decode(z.to(vae.dtype), *args, **kwargs)
        return own_dtype_decode
    return wrap


def request(cfg: TrainConfig, prompt: str) -> GenerateRequest:
    """A sample's generation settings: the run's sample seed, steps, CFG and resolution."""
    return GenerateRequest(prompt=prompt, seed=cfg.seed, steps=cfg.sample_steps,
                           cfg_scale=cfg.sample_cfg_scale, width=cfg.resolution,
                           height=cfg.resolution)


@torch.no_grad()
def encode_prompts(base, cfg: TrainConfig, prompts: list[str], device: torch.device
                   ) -> list[dict]:
    """Each sample prompt's text conditioning on `device`, as the pipeline computes it
    (Generator.encode), for `render(embeds=...)`. Training calls it once after caching, while
    the card holds no UNet, when the text encoders are frozen: samples then never bring the
    encoders (1.5 GiB for SDXL's two in bf16) back onto the card, and the memory planner
    counts samples without them (training/memory_model.py, CountedModel.sampling)."""
    generator = Generator(pipeline_from_base(base), base.name)
    homes = [next(encoder.parameters()).device for encoder in base.text_encoders]
    try:  # on the card together, as when caching captions (the planner's caching phase)
        for encoder in base.text_encoders:
            encoder.to(device)
        return [generator.encode(request(cfg, prompt), device) for prompt in prompts]
    finally:
        for encoder, home in zip(base.text_encoders, homes):
            encoder.to(home)


@torch.no_grad()
def render(base, unet, cfg: TrainConfig, prompts: list[str], out_dir: Path, step: int,
           device: torch.device, dtype: torch.dtype, text_encoders: tuple = (),
           on_progress=None, embeds: list[dict] | None = None) -> list[Path]:
    """One image per prompt with the fixed sample seed; the UNet is left as it was found.
    `text_encoders`: the bare trained encoders when they train (the base model then holds their
    DDP wrappers, which a pipeline cannot use). `on_progress(done, total)`: after each denoising
    step of all the prompts together. `embeds`: the prompts encoded before (`encode_prompts`),
    so the text encoders do not run.

    Only the UNet runs under autocast (`dtype`); the text encoders run in their own dtype and
    the VAE decodes in its own (fp32). Autocast around the whole pipeline made the SDXL VAE
    decode in fp16 although its weights are fp32 — the pipeline's own upcast guard
    (force_upcast) looks at the weights' dtype and never fired — so SDXL samples came out black
    or wrong under fp16 (issue 17 item 8). Without `embeds`, text encoders kept off the device
    visit it only to encode the prompts."""
    if text_encoders:
        base = dataclasses.replace(base, text_encoder=text_encoders[0], text_encoder_2=(
            text_encoders[1] if len(text_encoders) > 1 else None))
    was_training = unet.training
    unet.eval()
    base.vae.to(device)
    generator = Generator(pipeline_from_base(base, unet), base.name,
                          live_adapter=(cfg.output_name, 1.0))
    paths, total = [], len(prompts) * cfg.sample_steps
    try:
        with ExitStack() as stack:
            if dtype != torch.float32:
                stack.enter_context(patched(unet, "forward", autocast_only(device.type, dtype)))
            stack.enter_context(patched(base.vae, "decode", in_vae_dtype(base.vae)))
            for encoder in base.text_encoders if embeds is None else ():
                if next(encoder.parameters()).device != device:
                    stack.enter_context(patched(encoder, "forward", visiting(encoder, device)))
            stack.enter_context(vae_tiles(base.vae, cfg.resolution, cfg.resolution))
            for k, prompt in enumerate(prompts):
                def on_step(_index, done, _total, k=k):
                    if on_progress:
                        on_progress(min(k * cfg.sample_steps + done, total), total)
                for _, _, image, text in generator.generate(
                        request(cfg, prompt), on_step=on_step,
                        embeds=embeds[k] if embeds is not None else None):
                    paths.append(save_png(image, text, out_dir / f"step{step:06d}-{k}.png"))
    finally:
        base.vae.to("cpu")
        unet.train(was_training)
    return paths
