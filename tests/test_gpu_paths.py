"""The CUDA paths of issue 17 checked without a GPU: bf16 on Turing, the VAE encode batch at
SDXL sizes, Prodigy's text-encoder group, load dtypes, host-to-device copies per step (on the
meta device), the ETA with samples, and the dtype of every VAE decoder layer in samples."""

from __future__ import annotations

import contextlib
import random
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from studio.config import TrainConfig
from training import cache, data, generate, models, sampling
from training.loss import LatentScale, train_step
from training.optim import build_optimizer
from training.progress import Eta
from training.train import mixed_precision


@pytest.mark.parametrize("emulated_only, expected", [(True, "fp16"), (False, "bf16")])
def test_auto_precision_is_fp16_where_bf16_is_only_emulated(monkeypatch, emulated_only, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        # Turing (T4, RTX 20xx): True only when emulation counts. Ampere and newer: True.
        return including_emulation or not emulated_only
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert mixed_precision(TrainConfig()) == expected


class RecordingVae(torch.nn.Module):
    """Records the batch of every encode call; returns a posterior of the right shape."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def encode(self, pixels):
        self.calls.append((len(pixels), pixels.shape[-1]))
        mean = torch.zeros(len(pixels), 4, pixels.shape[2] // 8, pixels.shape[3] // 8)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=mean + 1))


def test_large_images_are_encoded_one_at_a_time(tmp_path):
    (tmp_path / "model" / "vae").mkdir(parents=True)
    (tmp_path / "model" / "vae" / "config.json").write_text("{}")
    items = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), (i * 20, 0, 0)).save(path)
        items.append(SimpleNamespace(image=path, sha256=f"{i:064d}"))
    sizes = [(1024, 1024)] * 3 + [(512, 512)] * 7
    base = SimpleNamespace(vae=RecordingVae(), folder=tmp_path / "model")
    latents, counts = cache.latents(items, sizes, False, base, tmp_path / "cache",
                                    torch.device("cpu"))
    assert counts.encoded == 10 and latents[0]["mean"].shape == (4, 128, 128)
    # SDXL size: one image per VAE call (the fp32 encode peaks at 2.5 GiB for one, 5 for two);
    # SD1.5 size: four at a time as before.
    assert sorted(base.vae.calls) == [(1, 1024)] * 3 + [(3, 512), (4, 512)]


def test_prodigy_trains_the_text_encoder_at_the_unets_multiplier():
    pytest.importorskip("prodigyopt")
    cfg = TrainConfig(optimizer="prodigy", learning_rate=1.0, text_encoder_lr=5e-5)
    unet_p, text_p = torch.nn.Parameter(torch.zeros(8)), torch.nn.Parameter(torch.zeros(8))
    opt = build_optimizer(cfg, [{"params": [unet_p]}, {"params": [text_p],
                                                       "lr": cfg.text_encoder_lr}],
                          torch.device("cpu"))
    for step in range(5):
        grad = torch.linspace(-1, 1, 8) * (step + 1)
        unet_p.grad, text_p.grad = grad.clone(), grad.clone()
        opt.step()
    # The same gradients move both by the same amount (the text encoder's 5e-5 was taken as
    # Prodigy's multiplier: it moved 20,000x less).
    moved = {name: float(p.detach().abs().sum()) for name, p in (("unet", unet_p),
                                                                 ("text", text_p))}
    assert moved["unet"] > 0 and moved["text"] == pytest.approx(moved["unet"], rel=1e-6)


def test_generation_loads_the_model_in_its_target_dtype(monkeypatch, tiny_model):
    seen = {}

    def spy(base, unet=None):
        seen.update({name: {p.dtype for p in getattr(base, name).parameters()}
                     for name in ("unet", "text_encoder", "vae")})
        return SimpleNamespace(to=lambda *a, **k: None)
    monkeypatch.setattr(generate, "pipeline_from_base", spy)
    # A GPU would get fp16; the host never holds the fp32 model on the way there.
    generate.load_pipeline(str(tiny_model), tiny_model.parent, torch.device("cuda"))
    assert seen == {"unet": {torch.float16}, "text_encoder": {torch.float16},
                    "vae": {torch.float16}}


class HostToDevice(TorchDispatchMode):
    """Counts copies from the host onto the (meta) device."""

    def __init__(self):
        super().__init__()
        self.copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [a for a in args if isinstance(a, torch.Tensor)]
        outs = out if isinstance(out, (list, tuple)) else [out]
        if any(t.device.type == "cpu" for t in ins) and any(
                isinstance(o, torch.Tensor) and o.device.type == "meta" for o in outs):
            self.copies.append(str(func))
        return out


def test_a_step_copies_to_the_device_once(monkeypatch, tmp_path, tiny_model):
    """The meta device stands in for a GPU: every host-to-device copy in a step is a stream
    sync on CUDA. Noise, timesteps and the posterior sample travel as one buffer; the cached
    data and alphas_cumprod are on the device already."""
    def latents(items, sizes, flips, base, cache_dir, device, on_progress=None):
        return ([{"mean": torch.zeros(4, 8, 8), "std": torch.ones(4, 8, 8)} for _ in items],
                cache.Counts())

    def texts(captions, base, cache_dir, device):
        return torch.zeros(len(captions), 77, 32), None, cache.Counts()
    monkeypatch.setattr(data.cache, "latents", latents)
    monkeypatch.setattr(data.cache, "texts", texts)
    cfg = TrainConfig(rank=4, batch_size=2, min_snr_gamma=5.0, noise_offset=0.05)
    base = models.load_base(TrainConfig(base_model=str(tiny_model)), tiny_model.parent)
    device = torch.device("meta")
    items = [SimpleNamespace(name=f"{i}.png", size=(64, 64), caption="a fox", repeats=1)
             for i in range(4)]
    train_set, _ = data.build(items, [], cfg, base, tmp_path, device)
    unet = base.unet
    models.add_lora(unet, cfg)
    unet.to(device)
    base.noise_scheduler.alphas_cumprod = base.noise_scheduler.alphas_cumprod.to(device)
    accelerator = SimpleNamespace(device=device, autocast=contextlib.nullcontext,
                                  backward=lambda loss: loss.backward())
    gen = torch.Generator().manual_seed(0)
    with HostToDevice() as mode:
        for indices in train_set.epoch_batches(0, cfg.seed, cfg.batch_size):
            batch = train_set.batch(indices, gen, random.Random(0))
            loss = train_step(accelerator, unet, batch, base.noise_scheduler, "epsilon",
                              LatentScale(0.18215), gen, cfg.noise_offset, cfg.min_snr_gamma,
                              torch.float32)
    assert loss.device.type == "meta"
    assert len(mode.copies) == 2, mode.copies  # two micro-batches, one copy each


def test_eta_counts_the_samples_still_to_come():
    # Guessed before they run, in training steps of batch 5 (3 forwards per image): a sample
    # is 1 prompt x 30 denoising steps x 2 forwards = 4 steps; validation 3 images x 5 = 1.
    cfg = TrainConfig(sample_every_n_epochs=1, sample_every_n_steps=0, batch_size=5,
                      sample_steps=30)
    eta = Eta(total=10, per_epoch=5, cfg=cfg, prompts=1, validation_images=3)
    # What `check` says before the run, for 1 s steps.
    assert eta.planned(1.0) == pytest.approx({"training": 10, "samples": 8, "validation": 2})
    for seconds in (9.0, 1.0, 1.0):  # the first step's warm-up is left out
        eta.step_done(seconds)
    # 7 steps of 1 s, samples after steps 5 and 10 (guessed at 4 steps each), validation at
    # the same two points (1 step each).
    assert eta.seconds_left(3) == pytest.approx(7 + 2 * 4 + 2 * 1)
    eta.extra_seconds["sample"].append(30.0)  # measured: replaces the guess
    assert eta.seconds_left(5) == pytest.approx(5 + 1 * 30 + 1 * 1)


@pytest.mark.parametrize("model", ["tiny_model", "tiny_sdxl"])
def test_samples_decode_in_fp32_under_half_precision(request, tmp_path, model):
    """Training in bf16 (autocast on the CPU stands in for the GPU's): the UNet runs in bf16, but
    every layer of the VAE decoder computes in fp32 (the SDXL VAE decodes black in fp16)."""
    folder = request.getfixturevalue(model)
    cfg = TrainConfig(base_model=str(folder), resolution=64, sample_steps=2, rank=4)
    base = models.load_base(cfg, folder.parent, unet_dtype=torch.bfloat16,
                            text_dtype=torch.bfloat16)
    models.add_lora(base.unet, cfg)
    seen: dict[str, set] = {"decoder": set(), "unet": set()}

    def record(kind):
        def hook(module, args, out):
            tensors = out if isinstance(out, tuple) else (out,)
            seen[kind].update(t.dtype for t in tensors if torch.is_tensor(t))
        return hook
    for module in base.vae.decoder.modules():
        module.register_forward_hook(record("decoder"))
    base.vae.post_quant_conv.register_forward_hook(record("decoder"))
    base.unet.conv_out.register_forward_hook(record("unet"))
    paths = sampling.render(base, base.unet, cfg, ["a fox"], tmp_path, 1, torch.device("cpu"),
                            torch.bfloat16)
    assert len(paths) == 1 and paths[0].is_file()
    assert seen["unet"] == {torch.bfloat16}
    assert seen["decoder"] == {torch.float32}


def test_cached_text_encoders_visit_the_device_only_to_encode(tmp_path, tiny_model,
                                                              monkeypatch):
    """A sample's text encoders whose outputs are cached stay off the card: each encoder moves
    to the device for its own forward and back (sampling.visiting), also when it fails; the
    UNet denoises with them away. The meta device stands in for the GPU in the moves."""
    cfg = TrainConfig(base_model=str(tiny_model), resolution=64, sample_steps=2, rank=4)
    base = models.load_base(cfg, tiny_model.parent)
    encoder = base.text_encoder
    moves = []
    monkeypatch.setattr(type(encoder), "to", lambda self, device: moves.append(
        torch.device(device).type) or self)
    gpu = torch.device("meta")
    with sampling.patched(encoder, "forward", sampling.visiting(encoder, gpu)):
        ids = torch.zeros(1, 77, dtype=torch.long)
        encoder(ids)
        assert moves == ["meta", "cpu"]
        with pytest.raises(IndexError):  # a token id past the vocabulary
            encoder(torch.full((1, 77), 10**9, dtype=torch.long))
        assert moves[2:] == ["meta", "cpu"]
    assert "forward" not in encoder.__dict__  # the class's forward again


@pytest.mark.parametrize("model", ["tiny_model", "tiny_sdxl"])
def test_samples_from_prompts_encoded_once_need_no_text_encoder(request, tmp_path, model):
    """Training encodes the sample prompts once after caching (sampling.encode_prompts) and
    renders every sample from that: the same pixels as encoding in the pipeline, and the text
    encoders do not run (so they need not be on the card)."""
    import numpy as np

    folder = request.getfixturevalue(model)
    cfg = TrainConfig(base_model=str(folder), resolution=64, sample_steps=2, rank=4)
    base = models.load_base(cfg, folder.parent)
    models.add_lora(base.unet, cfg)
    prompts = ["a fox", "zxq, a red circle"]
    cpu = torch.device("cpu")
    encoded = sampling.encode_prompts(base, cfg, prompts, cpu)
    plain = sampling.render(base, base.unet, cfg, prompts, tmp_path / "plain", 1, cpu,
                            torch.float32)

    def refuse(*args, **kwargs):
        raise AssertionError("a text encoder ran")
    for encoder in base.text_encoders:
        encoder.forward = refuse
    again = sampling.render(base, base.unet, cfg, prompts, tmp_path / "once", 1, cpu,
                            torch.float32, embeds=encoded)
    for a, b in zip(plain, again):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
        assert Image.open(a).text["parameters"] == Image.open(b).text["parameters"]
