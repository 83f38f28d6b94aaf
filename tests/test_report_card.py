"""The report card's rules without torch: recommendation, its reason, copy verdict, style ratio, the JSON file."""

from __future__ import annotations

import json

import pytest

from studio.runs import report_card as rc
from studio.runs.report_card import Row


def base(fidelity=0.9):
    return Row(label="base", fidelity=fidelity, fidelity_vs_base=1.0 if fidelity else None)


def lora(epoch, style, fidelity=0.9, copy=False, base_fidelity=0.9):
    return Row(label=f"style-e{epoch}", file=f"style-e{epoch}.safetensors", epoch=epoch,
               step=10 * epoch, style=style, fidelity=fidelity, copy_flag=copy,
               fidelity_vs_base=fidelity / base_fidelity if base_fidelity else None)


# (rows, expected epoch, pieces the reason must contain)
CASES = [
    ("best style wins", [base(), lora(1, 0.8), lora(2, 0.5), lora(3, 0.6)], 2,
     ["epoch 2: style 0.50, fidelity 100 % of base"]),
    ("later epochs lose fidelity", [base(), lora(1, 0.9), lora(2, 0.6, 0.85), lora(3, 0.4, 0.6),
                                    lora(4, 0.3, 0.3), lora(5, 0.2, 0.1)], 2,
     ["epoch 2: style 0.60, fidelity 94 % of base", "epochs 3–5 lose fidelity"]),
    ("a near copy is never recommended", [base(), lora(1, 0.7), lora(2, 0.2, copy=True)], 1,
     ["epoch 1: style 0.70", "epoch 2 near-copies a training image"]),
    ("exactly at the margin still counts", [base(1.0), lora(1, 0.5, 0.85, base_fidelity=1.0)],
     1, ["epoch 1: style 0.50, fidelity 85 % of base"]),
    ("exactly at the style bar still counts", [base(), lora(1, rc.STYLE_BETTER)], 1,
     ["epoch 1: style 0.98"]),
    ("ties go to the earlier epoch", [base(), lora(2, 0.5), lora(1, 0.5)], 1, ["epoch 1"]),
    ("no file closer than base", [base(), lora(1, 0.995), lora(2, 1.3)], None,
     ["No file to recommend", "epochs 1, 2 match the held-out style no better"]),
    ("all lose fidelity", [base(), lora(1, 0.4, 0.5), lora(2, 0.3, 0.2)], None,
     ["No file to recommend", "epochs 1, 2 lose fidelity (below 85 % of base)"]),
    ("base scored 0: fidelity does not exclude", [base(0.0), lora(1, 0.5, 0.0, base_fidelity=0)],
     1, ["epoch 1: style 0.50, fidelity not measured"]),
    ("no LoRA files", [base()], None, ["no LoRA files"]),
]


@pytest.mark.parametrize("name,rows,epoch,reason", CASES, ids=[c[0] for c in CASES])
def test_recommendation_and_its_reason(name, rows, epoch, reason):
    rec = rc.recommend(rows)
    assert rec.epoch == epoch, rec
    for piece in reason:
        assert piece in rec.reason, rec.reason
    if epoch is not None:
        assert rec.file == f"style-e{epoch}.safetensors"


def test_files_within_one_epoch_are_named_by_step():
    rows = [base(), Row(label="a", file="a", epoch=1, step=5, style=0.6, fidelity=0.9,
                        fidelity_vs_base=1.0),
            Row(label="b", file="b", epoch=1, step=10, style=0.4, fidelity=0.9,
                fidelity_vs_base=1.0)]
    assert rc.recommend(rows).reason.startswith("step 10: style 0.40")


@pytest.mark.parametrize("epochs,text", [
    ([3], "epoch 3"), ([1, 2], "epochs 1, 2"), ([8, 9, 10], "epochs 8–10"),
    ([1, 2, 3, 5, 7, 8], "epochs 1–3, 5, 7, 8")])
def test_group_names(epochs, text):
    rows = [lora(e, 0.5) for e in epochs]
    assert rc.group_names(rows, rows) == text


@pytest.mark.parametrize("distances,base_distances,combined", [
    ({"a": 0.0, "b": 0.0}, {"a": 2.0, "b": 5.0}, 0.0),   # the held-out statistics exactly
    ({"a": 2.0, "b": 5.0}, {"a": 2.0, "b": 5.0}, 1.0),   # the base itself
    ({"a": 1.0, "b": 5.0}, {"a": 2.0, "b": 5.0}, 0.75),  # each statistic weighs the same
    ({"a": 0.0, "b": 1.0}, {"a": 0.0, "b": 2.0}, 0.25),  # both exact on "a": counts as 0
    ({"a": 3.0, "b": 1.0}, {"a": 0.0, "b": 2.0}, 0.5),   # base exact on "a": "b" decides
])
def test_relative_style(distances, base_distances, combined):
    assert rc.relative_style(distances, base_distances)[0] == pytest.approx(combined)


@pytest.mark.parametrize("ssim,latent,flag", [
    (1.0, 0.0, True), (0.95, 0.3, True), (rc.COPY_SSIM, rc.COPY_LATENT, True),
    (0.95, 0.9, False),  # same flat layout, different picture
    (0.5, 0.1, False), (0.2, 1.2, False)])
def test_near_copy_rule(ssim, latent, flag):
    assert rc.is_near_copy(ssim, latent) is flag


def test_card_round_trips_through_report_card_json(tmp_path):
    rows = [base(), lora(1, 0.5)]
    card = rc.ReportCard(base_model="m", rows=rows, recommendation=rc.recommend(rows),
                         settings={"seeds": [1000]}, seconds=1.5)
    path = rc.save(card, tmp_path)
    data = json.loads(path.read_text())
    assert data["metadata"] == {rc.RECOMMENDED_KEY: "1"}
    data["rows"][0]["from_a_newer_version"] = 1  # unknown keys are ignored
    path.write_text(json.dumps(data))
    loaded = rc.load(tmp_path)
    assert loaded.rows == rows and loaded.recommendation == card.recommendation
    assert loaded.base.label == "base" and rc.recommended_epoch(tmp_path) == 1
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_missing_or_broken_card_reads_as_none(tmp_path):
    assert rc.load(tmp_path) is None
    (tmp_path / rc.REPORT_FILE).write_text("{not json")
    assert rc.load(tmp_path) is None and rc.recommended_epoch(tmp_path) is None


def test_validation_losses_from_events(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join([
        json.dumps({"event": "progress", "step": 3}),
        json.dumps({"event": "validation", "step": 3, "epoch": 1, "loss": 0.5}),
        json.dumps({"event": "validation", "step": 6, "epoch": 2, "loss": 0.4}),
        json.dumps({"event": "validation", "step": 6, "epoch": 2, "loss": 0.39}),  # resumed
        '{"event": "validation", "step": 9, "ep',  # cut short by a crash
    ]))
    by_step, by_epoch = rc.validation_losses(events)
    assert by_step == {3: 0.5, 6: 0.39} and by_epoch == {1: 0.5, 2: 0.39}
    assert rc.validation_losses(tmp_path / "missing.jsonl") == ({}, {})

