"""ui/device.py: this machine's NVIDIA GPU and its memory from nvidia-smi (a stand-in script on
PATH), the card the Train tab predicts for, and the choice without a GPU."""

from __future__ import annotations

import os
import stat

import pytest

from ui import device


@pytest.fixture
def fresh(monkeypatch):
    for cached in (device.has_gpu, device.gpus):
        cached.cache_clear()
    yield
    for cached in (device.has_gpu, device.gpus):
        cached.cache_clear()


def fake_smi(folder, monkeypatch):
    """nvidia-smi answering the installer's query (with memory.total), as a 12 GB RTX 3060."""
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 3060, 560.35.03, 8.6, 12288'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.skipif(os.name == "nt", reason="a POSIX shell script stands in for nvidia-smi")
def test_this_machines_gpu_comes_first_and_is_the_default(tmp_path, monkeypatch, fresh):
    fake_smi(tmp_path, monkeypatch)
    cards = device.cards()
    assert cards[0] == device.Card("NVIDIA GeForce RTX 3060 (12 GB)", 12 * device.GIB, True)
    assert [c.memory_bytes // device.GIB for c in cards[1:]] == [6, 8, 12, 16, 24]
    assert device.card_for("") == cards[0] and device.card_for("detected") == cards[0]
    assert device.card_for("16").name == "a 16 GB card"


def test_without_a_gpu_an_8_gb_card_until_the_artist_picks_one(tmp_path, monkeypatch, fresh):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    assert device.gpus() == () and not device.has_gpu()
    assert device.card_for("").name == "an 8 GB card"
    assert device.card_for("detected").name == "an 8 GB card"  # that GPU is gone
    assert device.card_for("24").memory_bytes == 24 * device.GIB
