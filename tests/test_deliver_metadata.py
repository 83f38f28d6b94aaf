"""Copy to ComfyUI/A1111 (studio/runs/deliver.py): the run's report card travels in the copy's header."""

from __future__ import annotations

from pathlib import Path

import torch

from studio.runs import report_card as rc
from studio.runs.report_card import ReportCard, Row


def test_a_delivered_copy_carries_the_recommended_epoch(tmp_path, lora_files):
    """"Copy to ComfyUI/A1111" (studio.runs.deliver): a file of an evaluated run arrives with
    the card's recommended epoch in its header; the tensors (and the data-section hash A1111
    and Civitai compute) are unchanged, and the run's own file is left as it was."""
    import shutil

    from safetensors.torch import load_file

    from studio.runs import deliver
    from studio.safetensors_header import data_section_sha256, read_header

    run = tmp_path / "runs" / "r1"
    (run / "loras").mkdir(parents=True)
    (run / "config.toml").write_text("")
    source = Path(shutil.copy(lora_files[0], run / "loras" / "tiny-step50.safetensors"))
    (run / "tiny-step50.json").write_text("{}")  # a sidecar elsewhere is not this file's
    before = source.read_bytes()
    plain = deliver.copy_lora(source, tmp_path / "comfy-before")[0]
    assert plain.read_bytes() == before  # no card yet: a byte-for-byte copy

    rows = [Row(label="base", fidelity=0.9, fidelity_vs_base=1.0),
            Row(label="tiny-step50", file="loras/tiny-step50.safetensors", epoch=3, step=50,
                style=0.5, fidelity=0.9, fidelity_vs_base=1.0)]
    rc.save(ReportCard("tiny", rows, rc.recommend(rows)), run)
    copy = deliver.copy_lora(source, tmp_path / "comfy")[0]
    _, meta = read_header(copy)
    assert meta[rc.RECOMMENDED_KEY] == "3"
    assert {k: v for k, v in meta.items() if k != rc.RECOMMENDED_KEY} == read_header(source)[1]
    assert data_section_sha256(copy) == data_section_sha256(source)
    original, copied = load_file(source), load_file(copy)
    assert original.keys() == copied.keys()
    assert all(torch.equal(original[k], copied[k]) for k in original)
    assert source.read_bytes() == before
    assert not list((tmp_path / "comfy").glob("*.tmp*"))
