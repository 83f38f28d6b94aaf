"""Style-training options, each checked for its effect (issue 7)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from PIL import Image

from conftest import make_project, run_cli
from studio import dataset
from studio.dataset import augment as caption_augment
from studio.dataset import buckets
from studio.dataset.augment import CaptionRules
from studio.config import LrSchedule, Optimizer, TrainConfig


def test_buckets_follow_the_aspect_ratio_and_never_upscale():
    spec = buckets.BucketSpec(resolution=512, step=64, min_side=256, max_side=1024)
    table = buckets.resolutions(spec)
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in table)
    # As kohya's table: per width only the largest-area bucket, so for 2:3 (0.67) 384x640 (0.60)
    # is closer than 448x576 (0.78).
    assert buckets.assign((2000, 3000), spec, table) == (384, 640)
    assert buckets.assign((3000, 2000), spec, table) == (640, 384)
    assert buckets.assign((1024, 1024), spec, table) == (512, 512)
    small = buckets.assign((300, 300), spec, table)  # never upscaled by default
    assert small[0] <= 300 and small[1] <= 300 and small == (256, 256)
    assert buckets.assign((300, 300), buckets.BucketSpec(512, upscale=True), table) == (512, 512)
    assert buckets.histogram([(512, 512), (384, 576), (512, 512)]) == {"512x512": 2,
                                                                        "384x576": 1}


def test_trigger_word_survives_every_dropout():
    rng = random.Random(0)
    rules = CaptionRules("zxq", shuffle_tags=True, keep_tags=1, tag_dropout=1.0,
                         caption_dropout=0.0)
    caption = "ink, bold lines, flat colour, cat"
    assert caption_augment.augment(caption, rules, "tags", rng) == "zxq, ink"  # kept tag stays
    rules = CaptionRules("zxq", caption_dropout=1.0)
    assert caption_augment.augment(caption, rules, "tags", rng) == "zxq"
    shuffled = {caption_augment.augment("zxq, a, b, c, d", CaptionRules(
        "zxq", shuffle_tags=True), "tags", rng) for _ in range(30)}
    assert len(shuffled) > 5 and all(s.startswith("zxq, ") for s in shuffled)
    # Sentences are never shuffled or dropped tag-wise.
    rules = CaptionRules("zxq", shuffle_tags=True, tag_dropout=0.9)
    assert caption_augment.augment("a cat, sitting on a mat", rules, "sentences", rng) == \
        "zxq, a cat, sitting on a mat"


def test_caption_style_detection():
    tags = ["1girl, red hair, ink, flat colour", "cat, ink, flat colour, outline"]
    sentences = ["A cat sitting on a red mat in the sun.", "Two birds, flying over the sea."]
    assert caption_augment.detect_style(tags) == "tags"
    assert caption_augment.detect_style(sentences) == "sentences"


def test_repeat_folders_and_metadata_jsonl(tmp_path):
    root = tmp_path / "data"
    (root / "10_style").mkdir(parents=True)
    Image.new("RGB", (64, 96), "red").save(root / "top.png")
    Image.new("RGB", (64, 64), "blue").save(root / "10_style" / "a.png")
    (root / "10_style" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": "a blue  square"}) + "\n")
    items = {it.name: it for it in dataset.load(root, repeats=2)}
    assert items["top.png"].repeats == 2 and items["top.png"].size == (64, 96)
    assert items["10_style/a.png"].repeats == 10
    assert items["10_style/a.png"].caption == "a blue square"
    assert [it.name for it in dataset.load(root, exclude=("10_style/a.png",))] == ["top.png"]


def test_min_snr_weights_match_the_paper():
    from diffusers import DDPMScheduler

    from training.loss import min_snr_weights, snr

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([10, 500, 999])
    s = snr(sched, t)
    eps = min_snr_weights(sched, "epsilon", t, 5.0)
    v = min_snr_weights(sched, "v_prediction", t, 5.0)
    assert torch.allclose(eps, torch.minimum(s, torch.tensor(5.0)) / s)
    assert torch.allclose(v, torch.minimum(s, torch.tensor(5.0)) / (s + 1))
    assert eps[0] < 0.1 and eps[2] == 1.0  # low noise is down-weighted, high noise is not
    zsnr = DDPMScheduler(rescale_betas_zero_snr=True)  # SNR(T) = 0 must not give NaN
    assert torch.isfinite(min_snr_weights(zsnr, "v_prediction", torch.tensor([999]), 5.0)).all()


def test_noise_offset_shifts_whole_channels():
    from training.loss import sample_noise

    plain = sample_noise((64, 4, 16, 16), torch.Generator().manual_seed(0), 0.0)
    offset = sample_noise((64, 4, 16, 16), torch.Generator().manual_seed(0), 0.5)
    assert plain.mean(dim=(2, 3)).std() < 0.1 < offset.mean(dim=(2, 3)).std()


@pytest.mark.parametrize("name", ["adamw", "prodigy", "adafactor"])
def test_optimizers_reduce_a_simple_loss(name):
    from training.optim import build_optimizer, build_schedule

    cfg = TrainConfig(optimizer=Optimizer(name), learning_rate=1.0 if name == "prodigy" else 0.05,
                      lr_warmup_steps=2, lr_scheduler=LrSchedule.cosine, weight_decay=0.0)
    w = torch.nn.Parameter(torch.full((8,), 3.0))
    opt = build_optimizer(cfg, [w], torch.device("cpu"))
    sched = build_schedule(cfg, opt, total_steps=300)
    lrs = []
    for _ in range(300):  # Prodigy starts from a tiny step estimate (d0 = 1e-6) and grows it
        loss = (w ** 2).sum()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        lrs.append(sched.get_last_lr()[0])
    assert (w ** 2).sum() < 72 * 0.5
    assert lrs[0] < lrs[2] and lrs[-1] < lrs[5]  # warmup up, cosine down


def test_8bit_adam_on_cpu_is_a_clear_message(project):
    run = run_cli("train", str(project), "--set", "optimizer=adamw8bit")
    assert run.returncode == 2 and run.events[-1]["field"] == "optimizer"
    assert "NVIDIA GPU" in run.events[-1]["message"]


@pytest.mark.slow
def test_buckets_flip_live_captions_and_validation_through_the_cli(tmp_path, tiny_model):
    project = make_project(tmp_path / "p", tiny_model, n_images=22, max_steps=14, batch_size=2,
                           shuffle_tags=True, tag_dropout=0.2, flip_horizontal=True,
                           bucket_step=16, min_bucket_side=32, sample_every_n_epochs=0)
    for i in range(6):  # some landscape images: a second bucket
        Image.new("RGB", (96, 48), "green").save(project / "dataset" / f"wide{i}.png")
        (project / "dataset" / f"wide{i}.txt").write_text("a green field, wide")
    runs = [run_cli("train", str(project)) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    ready = [e for e in runs[0].of("status") if "buckets" in e["details"]][0]["details"]
    # 28 images, 2 held out for validation (5%, at least 2); 96x48 lands in 80x48 (ratio 1.67).
    assert set(ready["buckets"]) == {"64x64", "80x48"} and sum(ready["buckets"].values()) == 26
    assert ready["validation_images"] == 2
    assert ready["texts_encoded"] == 0 and ready["caption_style"] in ("tags", "sentences")
    assert ready["latents_encoded"] == 2 * 26  # every image plain and mirrored
    val = [[v["loss"] for v in r.of("validation")] for r in runs]
    assert [v["step"] for v in runs[0].of("validation")] == [13, 14]  # epoch end, and the end
    assert val[0] == val[1]  # held-out loss is deterministic across reruns
    assert not runs[0].of("sample")  # samples turned off


def test_planned_steps_match_the_batches_the_trainer_makes():
    from studio.dataset import plan
    from training.data import TrainingData

    cfg = TrainConfig(batch_size=3, gradient_accumulation_steps=2, resolution=64,
                      min_bucket_side=32, bucket_step=16, epochs=2)
    sizes = plan.bucket_sizes([(64, 64)] * 7 + [(96, 48)] * 4 + [(48, 96)] * 2, cfg)
    repeats = [1] * 10 + [3] * 3
    data = TrainingData.__new__(TrainingData)  # only the batching, no model or cache
    data.items = [dataset.Item(None, "", None, "", (0, 0), r) for r in repeats]
    data.sizes = sizes
    for world in (1, 2):
        batches = data.epoch_batches(0, 0, cfg.batch_size, 0, world)
        per_epoch, total = plan.steps(sizes, repeats, cfg, world)
        assert per_epoch == -(-len(batches) // cfg.gradient_accumulation_steps)
        assert total == 2 * per_epoch
        assert all(len({sizes[i] for i in b}) == 1 for b in batches)  # one bucket per batch
