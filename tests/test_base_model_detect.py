"""Checkpoint detection from the safetensors header alone (studio/base_model/detect.py, issue 6).

Files are written here with the real key names and shapes (lora-formats.md §8.5) but sparse,
zero data, so they cost nothing; no torch is needed. Bounded reads are proved by counting bytes.
"""

from __future__ import annotations

import builtins
import json
import math
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from studio.base_model import detect as cd
from studio.base_model.detect import CheckpointRefused, detect
from studio.safetensors_header import read_header

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1, "I64": 8}
U = cd.UNET
TO_K = U + "input_blocks.{}.1.transformer_blocks.0.attn2.to_k.weight"
PROBE = U + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
SD1 = {cd.IN_CONV: ("F16", [320, 4, 3, 3]), TO_K.format(1): ("F16", [320, 768]),
       cd.SD1_TE: ("F16", [49408, 768]), cd.VAE_KEY: ("F16", [128, 3, 3, 3])}
SD2 = {cd.IN_CONV: ("F16", [320, 4, 3, 3]), TO_K.format(1): ("F16", [320, 1024]),
       cd.SD2_TE: ("F16", [49408, 1024]), cd.VAE_KEY: ("F16", [128, 3, 3, 3])}
SDXL = {cd.IN_CONV: ("F16", [320, 4, 3, 3]), TO_K.format(4): ("F16", [640, 2048]),
        cd.LABEL_EMB: ("F16", [1280, 2816]), cd.XL_TE1: ("F16", [49408, 768]),
        cd.XL_TE2: ("F16", [49408, 1280]), cd.VAE_KEY: ("F16", [128, 3, 3, 3])}


def write(path: Path, tensors: dict, metadata: dict | None = None,
          data: dict[str, bytes] | None = None, header_length: int = 0) -> Path:
    """A safetensors file: real header, sparse zero data except the given tensors' bytes."""
    header, offset = {}, 0
    for key, (dtype, shape) in tensors.items():
        size = math.prod(shape) * SIZES[dtype]
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (max(header_length - len(raw), 0) or -len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for key, blob in (data or {}).items():
            fh.seek(8 + len(raw) + header[key]["data_offsets"][0])
            fh.write(blob)
        fh.truncate(8 + len(raw) + offset)
    return path


def bias(std: float, dtype: str = "F16") -> tuple[dict, dict]:
    """The SD2 probe bias with population std `std` (alternating ±std)."""
    values = [std if i % 2 else -std for i in range(320)]
    if dtype == "F16":
        blob = struct.pack("<320e", *values)
    elif dtype == "F32":
        blob = struct.pack("<320f", *values)
    else:
        blob = b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:]
                        for v in values)
    return {PROBE: (dtype, [320])}, {PROBE: blob}


@pytest.mark.parametrize("layout, arch, cross, hidden", [
    (SD1, "sd1", 768, (768,)), (SD2, "sd2", 1024, (1024,)), (SDXL, "sdxl", 2048, (768, 1280))])
def test_architectures(tmp_path, layout, arch, cross, hidden):
    found = detect(write(tmp_path / "m.safetensors", layout))
    assert (found.architecture, found.cross_attention_dim, found.text_hidden) == \
        (arch, cross, hidden)
    assert found.has_vae and not found.fp8 and not found.zero_terminal_snr
    if arch == "sd2":  # no probe tensor here: SD2 files don't say, so the caller must ask
        assert (found.prediction_type, found.prediction_source) == (None, "unknown")
    else:
        assert (found.prediction_type, found.prediction_source) == ("epsilon", "default")


@pytest.mark.parametrize("dtype", ["F16", "F32", "BF16"])
@pytest.mark.parametrize("std, expected", [(0.15, "v_prediction"), (0.02, "epsilon")])
def test_sd2_prediction_guessed_from_one_small_tensor(tmp_path, monkeypatch, std, expected,
                                                      dtype):
    extra, data = bias(std, dtype)
    path = write(tmp_path / "sd2.safetensors", {**SD2, **extra}, data=data)
    read = count_reads(monkeypatch)
    found = detect(path)
    assert (found.prediction_type, found.prediction_source) == (expected, "weights")
    assert "guessed" in " ".join(found.notes)
    assert abs(cd.sd2_bias_std(path, read_header(path)[0]) - std) < 1e-3
    assert sum(read) < path.stat().st_size // 1000  # header + 640-1280 bytes, not the tensors


def test_markers_and_metadata(tmp_path):
    marked = {**SDXL, "v_pred": ("F32", [0]), "ztsnr": ("F32", [0])}
    found = detect(write(tmp_path / "noob.safetensors", marked))
    assert (found.prediction_type, found.prediction_source, found.zero_terminal_snr) == \
        ("v_prediction", "marker", True)
    found = detect(write(tmp_path / "meta.safetensors", SD2,
                         {"modelspec.prediction_type": "v"}))
    assert (found.prediction_type, found.prediction_source) == ("v_prediction", "metadata")
    found = detect(write(tmp_path / "arch.safetensors", SD2,
                         {"modelspec.architecture": "stable-diffusion-v2-768-v"}))
    assert found.prediction_type == "v_prediction"


def test_fp8_is_accepted_with_a_note_and_missing_vae_reported(tmp_path):
    fp8 = {k: ("F8_E4M3", s) for k, (_, s) in SDXL.items()}
    found = detect(write(tmp_path / "fp8.safetensors", fp8))
    assert found.fp8 and "upcast" in " ".join(found.notes)
    no_vae = {k: v for k, v in SD1.items() if k != cd.VAE_KEY}
    found = detect(write(tmp_path / "novae.safetensors", no_vae))
    assert not found.has_vae and "No VAE" in " ".join(found.notes)
    from training import single_file

    with pytest.raises(single_file.SingleFileError, match="no VAE"):
        single_file.load(tmp_path / "novae.safetensors")
    with pytest.raises(single_file.SingleFileError, match="choose the prediction type") as info:
        single_file.load(write(tmp_path / "sd2.safetensors", SD2))
    assert "v_prediction" in info.value.hint


def test_text_encoder_without_text_model_is_sd1(tmp_path):
    # The layout pre-2022 tools and transformers >= 5.6 write; A1111 and ComfyUI load it.
    old = {**drop(SD1, cd.SD1_TE), cd.SD1_TE_OLD: ("F16", [49408, 768])}
    found = detect(write(tmp_path / "old.safetensors", old))
    assert (found.architecture, found.text_hidden) == ("sd1", (768,))
    assert "without 'text_model.'" in " ".join(found.notes)


def drop(layout, *keys):
    return {k: v for k, v in layout.items() if k not in keys}


REFUSED = {
    "inpainting": ({**SD1, cd.IN_CONV: ("F16", [320, 9, 3, 3])}, "inpainting"),
    "pix2pix": ({**SD1, cd.IN_CONV: ("F16", [320, 8, 3, 3])}, "8 input channels"),
    "refiner": ({**drop(SDXL, cd.XL_TE1, cd.XL_TE2), cd.REFINER_TE: ("F16", [49408, 1280])},
                "refiner"),
    "playground": ({**SDXL, "edm_mean": ("F32", [1, 4, 1, 1]), "edm_std": ("F32", [1, 4, 1, 1])},
                   "EDM"),
    "cosxl": ({**SDXL, "edm_vpred.sigma_max": ("F32", [])}, "EDM v-prediction"),
    "lora": ({"lora_unet_down_blocks_0_x.lora_down.weight": ("F16", [4, 320])}, "a LoRA"),
    "unet_only": ({cd.IN_CONV: SD1[cd.IN_CONV], TO_K.format(1): SD1[TO_K.format(1)]},
                  "without its text encoder"),
    "comfy_unet": ({"diffusion_model.input_blocks.0.0.weight": ("F16", [320, 4, 3, 3])},
                   "only a UNet"),
    "diffusers_unet": ({"conv_in.weight": ("F16", [320, 4, 3, 3])}, "only a UNet"),
    "vae": ({"encoder.down.0.block.0.conv1.weight": ("F16", [128, 128, 3, 3])}, "a VAE"),
    "unknown": ({"foo.weight": ("F16", [1])}, "unknown layout"),
    "mixed": ({**SD1, TO_K.format(1): ("F16", [320, 1024])}, "different models"),
    "xl_no_label": (drop(SDXL, cd.LABEL_EMB), "mis-packed"),
    "sd1_label": ({**SD1, cd.LABEL_EMB: ("F16", [1280, 2816])}, "class/size embedding"),
    "nf4": ({**SD1, U + "input_blocks.1.1.proj_in.weight": ("U8", [1000])}, "quantised"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_unusable_layouts_are_refused_with_a_reason(tmp_path, name):
    layout, reason = REFUSED[name]
    with pytest.raises(CheckpointRefused, match=reason) as info:
        detect(write(tmp_path / f"{name}.safetensors", layout))
    assert str(info.value).startswith(f"{name}.safetensors: ") and info.value.hint


class Boom:
    """Unpickling this creates a file: proof that nothing was unpickled if it's absent."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "model.bin", "renamed.safetensors",
                                  "zip.safetensors"])
def test_pickles_are_refused_unopened(tmp_path, name):
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    payload = pickle.dumps(Boom(marker), protocol=4)
    path.write_bytes(b"PK\x03\x04" + payload if name.startswith("zip") else payload)
    with pytest.raises(CheckpointRefused, match="pickle") as info:
        detect(path)
    assert not marker.exists() and "safetensors" in info.value.hint


def count_reads(monkeypatch) -> list[int]:
    """Bytes read through every file opened from now on."""
    read: list[int] = []
    real_open = builtins.open

    class Counted:
        def __init__(self, fh):
            self._fh = fh

        def read(self, *args):
            data = self._fh.read(*args)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self._fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._fh.__exit__(*exc)

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Counted(real_open(*a, **k)))
    return read


def test_bad_headers_refused_without_reading_the_file(tmp_path, monkeypatch):
    big = 50 * 1024 * 1024
    cases = {"huge.safetensors": (struct.pack("<Q", 2**40), "limit"),
             "cut.safetensors": (struct.pack("<Q", big * 2) + b"{", "truncated"),
             "junk.safetensors": (struct.pack("<Q", 9) + b"not json!", "not valid JSON"),
             "list.safetensors": (struct.pack("<Q", 2) + b"[]", "not an object"),
             "tiny.safetensors": (b"\x01\x02", "shorter than")}
    for name, (head, _) in cases.items():
        with open(tmp_path / name, "wb") as fh:
            fh.write(head)
            if name != "tiny.safetensors":
                fh.truncate(big)  # a large (sparse) file behind the header
    read = count_reads(monkeypatch)
    for name, (_, reason) in cases.items():
        with pytest.raises(CheckpointRefused, match=reason) as info:
            detect(tmp_path / name)
        assert name in str(info.value) and "download it again" in info.value.hint
    assert sum(read) < 200  # 4 magic bytes + 8 length bytes (+ a 9-byte header) per file


def test_length_bytes_that_look_like_pickle_opcodes_are_fine(tmp_path):
    # 0x0380 = 896: the file starts with b"\x80\x03", a pickle protocol-3 header.
    path = write(tmp_path / "m.safetensors", SD1, header_length=0x380)
    assert path.read_bytes()[:2] == b"\x80\x03"
    assert detect(path).architecture == "sd1"


def test_gguf_and_other_suffixes(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(CheckpointRefused, match="GGUF"):
        detect(tmp_path / "m.gguf")
    (tmp_path / "m.onnx").write_bytes(b"\0" * 20)
    with pytest.raises(CheckpointRefused, match="not a .safetensors"):
        detect(tmp_path / "m.onnx")
    with pytest.raises(CheckpointRefused, match="not found"):
        detect(tmp_path / "missing.safetensors")


def test_detection_needs_neither_torch_nor_qt():
    code = ("import sys, studio.base_model.detect; "
            "sys.exit(bool({'torch', 'PySide6', 'diffusers'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
