"""Issue 17 item 1: with live captions and a validation set, the text encoders are still on the
training device when step 1 encodes its captions (a device-recording stub, no GPU needed)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from studio.config import TrainConfig
from training import data


class Encoder:
    """Records where it was put, like nn.Module.to."""

    def __init__(self):
        self.device = "cpu"

    def to(self, device):
        self.device = str(device)
        return self


@pytest.fixture
def stub_cache(monkeypatch):
    """The cache without a VAE or text encoder; `seen` gets the encoders' devices at each live
    caption encoding (what a training step does)."""
    seen = []

    def latents(items, sizes, flips, base, cache_dir, device, on_progress=None):
        return ([{"mean": torch.zeros(4, 8, 8), "std": torch.zeros(4, 8, 8)} for _ in items],
                data.cache.Counts())

    def texts(captions, base, cache_dir, device):
        for encoder in base.text_encoders:  # the real cache puts them where it encodes
            encoder.to(device)
        return torch.zeros(len(captions), 77, 8), None, data.cache.Counts(encoded=len(captions))

    def encode_text(base, captions, device):
        seen.append({e.device for e in base.text_encoders} | {str(device)})
        return torch.zeros(len(captions), 77, 8), None
    monkeypatch.setattr(data.cache, "latents", latents)
    monkeypatch.setattr(data.cache, "texts", texts)
    monkeypatch.setattr(data.cache, "encode_text", encode_text)
    return seen


def items(n: int) -> list:
    return [SimpleNamespace(name=f"{i:03d}.png", size=(64, 64), caption="zxq, a fox, red",
                            repeats=1) for i in range(n)]


@pytest.mark.parametrize("caption_dropout, expected", [(0.05, "meta"), (0.0, "cpu")])
def test_encoders_sit_where_step_1_needs_them(stub_cache, tmp_path, caption_dropout, expected):
    cfg = TrainConfig(caption_dropout=caption_dropout, trigger_word="zxq", batch_size=2)
    train_items, held_out = data.split_validation(items(24), cfg)
    assert held_out  # the style presets' case: 20+ images, so a validation set is built
    base = SimpleNamespace(text_encoders=(Encoder(), Encoder()), is_sdxl=False)
    device = torch.device("meta")  # a stand-in for "cuda": anything but the CPU
    train_set, val = data.build(train_items, held_out, cfg, base, tmp_path, device)
    assert val is not None and val.text is not None  # validation text is cached, not live
    assert {e.device for e in base.text_encoders} == {expected}
    if caption_dropout:  # step 1 encodes its captions with the encoders on the device
        idx = train_set.epoch_batches(0, cfg.seed, cfg.batch_size)[0]
        train_set.batch(idx, torch.Generator().manual_seed(0), random.Random(0))
        assert stub_cache == [{"meta"}]
