"""CLIP tokenizer files regenerated from the MIT BPE table (training/clip_bpe.py; issue 6).

No network: a small fake table stands in for open_clip's; the real cache, when present (made by
scripts/make_clip_bpe.py), is checked against CLIP's known ids (lora-formats.md §8.3-8.4).
"""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from studio.base_model import configs
from training import clip_bpe, single_file

CONFIGS = configs.ASSETS_CONFIGS


def fake_table(words=("a", "cat", "red")) -> tuple[bytes, int]:
    """A small BPE table in the open_clip format: header line, then one merge chain per word."""
    merges = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merges.append(f"{symbols[0]} {symbols[1]}")
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
    return gzip.compress(("bpe_simple_vocab_16e6.txt#version: 0.2\n" + "\n".join(merges))
                         .encode(), mtime=0), len(merges)


def test_bpe_from_a_fake_table_loads_in_transformers(tmp_path):
    from transformers import CLIPTokenizer

    table, n = fake_table()
    (tmp_path / "bpe.txt.gz").write_bytes(table)
    folder = clip_bpe.ensure_bpe(tmp_path / "out", source=tmp_path / "bpe.txt.gz",
                                 expected_sha256=None, n_merges=n)
    assert clip_bpe.is_complete(folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    assert len(vocab) == 512 + n + 2 and vocab["<|endoftext|>"] == len(vocab) - 1
    assert (folder / "merges.txt").read_text().splitlines()[:2] == ["#version: 0.2", "c a"]
    shutil.copy(CONFIGS / "sd15" / "tokenizer" / "tokenizer_config.json", folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    assert tok.convert_ids_to_tokens(tok("a cat").input_ids) == \
        ["<|startoftext|>", "a</w>", "cat</w>", "<|endoftext|>"]
    with pytest.raises(clip_bpe.BpeUnavailable, match="SHA-256"):
        clip_bpe.ensure_bpe(tmp_path / "other", source=tmp_path / "bpe.txt.gz", n_merges=n)
    (folder / "vocab.json").write_text("{}")  # damaged copy: regenerated, not trusted
    assert not clip_bpe.is_complete(folder)
    with pytest.raises(clip_bpe.BpeUnavailable, match="not in") as info:
        clip_bpe.ensure_bpe(folder, download=False)
    assert "make_clip_bpe.py" in info.value.hint


def test_bpe_download_failure_is_quick_and_explained(tmp_path, monkeypatch):
    import subprocess

    calls = []

    def offline(cmd, **kw):
        calls.append((cmd, kw))
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(clip_bpe.subprocess, "run", offline)
    with pytest.raises(clip_bpe.BpeUnavailable, match="No matching distribution") as info:
        clip_bpe.ensure_bpe(tmp_path)
    cmd, kw = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert "--only-binary=:all:" in cmd and kw["timeout"] <= 300
    assert "make_clip_bpe.py" in info.value.hint


REAL_BPE = clip_bpe.default_dir()


@pytest.mark.skipif(not clip_bpe.is_complete(REAL_BPE),
                    reason="CLIP BPE cache absent (run scripts/make_clip_bpe.py)")
def test_real_bpe_gives_clip_tokenizers_for_every_shipped_folder(tmp_path):
    from transformers import CLIPTokenizer

    assert clip_bpe.ensure_bpe(REAL_BPE, download=False) == REAL_BPE
    for name in ("sd15", "sd2-base", "sdxl-base"):
        folder = single_file.assemble(CONFIGS / name, tmp_path, "epsilon", False,
                                      {"checkpoint": name}, REAL_BPE)
        for sub in ("tokenizer", "tokenizer_2"):
            if (folder / sub).is_dir():
                tok = CLIPTokenizer.from_pretrained(folder, subfolder=sub)
                assert len(tok) == 49408 and tok("a cat").input_ids == single_file.A_CAT
                expected_pad = "!" if sub == "tokenizer_2" or name.startswith("sd2") \
                    else "<|endoftext|>"
                assert tok.pad_token == expected_pad


def test_bpe_read_from_a_wheel_and_pinned_counts(tmp_path):
    import zipfile

    table, n = fake_table(("a", "cat"))
    with zipfile.ZipFile(tmp_path / "open_clip_torch-3.3.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(clip_bpe.GZ_MEMBER, table)
    assert clip_bpe.read_gz(tmp_path / "open_clip_torch-3.3.0-py3-none-any.whl") == table
    with pytest.raises(ValueError, match="usable merges"):  # the real table has 48,894
        clip_bpe.build_files(table)
    assert (clip_bpe.N_MERGES, clip_bpe.VOCAB_SIZE) == (48894, 49408)
