"""The GUI's verdict on a base model (studio/base_model/inspect.py) is the worker's: same files
accepted, same refusal text, same architecture and prediction type; plus native sizes and the
resolution warning. Headers are sparse files with the real key layouts (no weights)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from studio.base_model import configs, detect as cd
from studio.base_model.inspect import inspect, resolution_warning
from test_base_model_detect import SD1, SD2, SDXL, bias, drop, write

ROOT = Path(__file__).resolve().parents[1]
V_STD = 0.2  # an SD2 probe bias this spread reads as 768-v (ComfyUI's rule)

# name: (header, expected (family, prediction, ztsnr) when usable, or a refusal fragment)
HEADERS = {
    "sd1": (SD1, ("sd1", "epsilon", False)),
    "sd2_v": ({**SD2, **bias(V_STD)[0]}, ("sd2", "v_prediction", False)),
    "sdxl": (SDXL, ("sdxl", "epsilon", False)),
    "sdxl_vpred": ({**SDXL, "v_pred": ("F16", [0]), "ztsnr": ("F16", [0])},
                   ("sdxl", "v_prediction", True)),
    "inpainting": ({**SD1, cd.IN_CONV: ("F16", [320, 9, 3, 3])}, "inpainting"),
    "refiner": ({**drop(SDXL, cd.XL_TE1, cd.XL_TE2), cd.REFINER_TE: ("F16", [49408, 1280])},
                "refiner"),
    "lora": ({"lora_unet_down_blocks_0_x.lora_down.weight": ("F16", [4, 320])}, "a LoRA"),
    "no_vae": (drop(SD1, cd.VAE_KEY), "no VAE"),
    "sd2_unknown": (SD2, "choose the prediction type"),
}


def make(tmp_path: Path, name: str) -> Path:
    layout, _ = HEADERS[name]
    data = bias(V_STD)[1] if name == "sd2_v" else None
    return write(tmp_path / f"{name}.safetensors", layout, data=data)


def worker_refusal(path: Path, prediction_type: str = "auto") -> str | None:
    """What the worker says when asked to train on `path` (its real entry: models.load_base),
    or None when it gets past every check made before reading a weight."""
    from studio.config import PredictionType, TrainConfig
    from studio.errors import UserError
    from training import models, single_file

    class Loaded(Exception):
        pass

    def stop(*_args, **_kwargs):
        raise Loaded  # past detection: the next step assembles configs and reads weights

    cfg = TrainConfig(base_model=str(path), prediction_type=PredictionType(prediction_type))
    original = single_file.assemble
    single_file.assemble = stop
    try:
        models.load_base(cfg, path.parent)
    except Loaded:
        return None
    except UserError as exc:
        return f"{exc} {exc.hint}"
    finally:
        single_file.assemble = original
    raise AssertionError("load_base neither refused nor loaded")


@pytest.mark.parametrize("name", HEADERS)
def test_the_gui_verdict_is_the_workers(tmp_path, name):
    path = make(tmp_path, name)
    info = inspect(str(path))
    assert info.problem == (worker_refusal(path) or "")
    expected = HEADERS[name][1]
    if isinstance(expected, tuple):
        assert info.ok and info.single_file, info.problem
        assert (info.family, info.prediction_type, info.zero_terminal_snr) == expected
        found = cd.detect(path)  # and the architecture the worker loads it as
        assert (found.architecture, found.zero_terminal_snr) == (info.family, expected[2])
    else:
        assert expected.lower() in info.problem.lower()


def test_other_refusals_agree_too(tmp_path):
    """Pickles (by name), broken files, missing paths, a folder that isn't a model."""
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(pickle.dumps({"a": 1}))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    truncated = write(tmp_path / "truncated.safetensors", SD1)
    truncated.write_bytes(truncated.read_bytes()[:200])
    (tmp_path / "folder").mkdir()
    for path, fragment in ((ckpt, "arbitrary code"), (broken, "damaged"),
                           (truncated, "damaged"), (tmp_path / "gone.safetensors", "not found"),
                           (tmp_path / "folder", "not a diffusers model folder")):
        problem = inspect(str(path)).problem
        assert fragment in problem and problem == worker_refusal(path), (path, problem)


def test_a_setting_can_supply_what_the_file_does_not_say(tmp_path):
    """An SD2 file without a readable prediction type trains once the setting names one, and a
    v-pred marker can be overridden; the GUI and the worker follow the setting alike."""
    sd2 = make(tmp_path, "sd2_unknown")
    info = inspect(str(sd2), prediction_type="v_prediction")
    assert info.ok and worker_refusal(sd2, "v_prediction") is None
    assert (info.prediction_type, info.native_resolution) == ("v_prediction", 768)
    assert inspect(str(sd2), prediction_type="epsilon").native_resolution == 512
    xl = make(tmp_path, "sdxl_vpred")
    assert inspect(str(xl), prediction_type="epsilon").prediction_type == "epsilon"


def test_native_sizes_and_the_resolution_warning(tmp_path):
    sizes = {name: inspect(str(make(tmp_path, name))).native_resolution
             for name in ("sd1", "sd2_v", "sdxl")}
    assert sizes == {"sd1": 512, "sd2_v": 768, "sdxl": 1024}
    pocket = inspect(str(ROOT / "assets" / "pocket-model"))
    assert pocket.ok and pocket.native_resolution == 64
    xl = inspect(str(make(tmp_path, "sdxl_vpred")))
    assert "SDXL" in xl.summary and "v-prediction" in xl.summary
    assert "1024 px" in resolution_warning(xl, 512)
    assert resolution_warning(xl, 1024) == resolution_warning(xl, 768) == ""
    sd1 = inspect(str(make(tmp_path, "sd1")))
    assert resolution_warning(sd1, 768) == "" and "512 px" in resolution_warning(sd1, 1024)
    assert "64 px" in resolution_warning(pocket, 512)


def test_the_configs_folder_can_be_replaced(tmp_path, monkeypatch):
    """LORA_STUDIO_MODEL_CONFIGS swaps assets/configs for every reader (sizes of unusual or
    tiny models): the native size comes from the folder the worker will load with."""
    for name in ("sd15", "sdxl-base"):
        (tmp_path / "cfg" / name / "unet").mkdir(parents=True)
        (tmp_path / "cfg" / name / "vae").mkdir()
        (tmp_path / "cfg" / name / "unet" / "config.json").write_text('{"sample_size": 8}')
        (tmp_path / "cfg" / name / "vae" / "config.json").write_text(
            json.dumps({"block_out_channels": [8, 16, 32, 32]}))
    monkeypatch.setenv(configs.CONFIGS_ENV, str(tmp_path / "cfg"))
    assert configs.config_folder("sdxl", None) == tmp_path / "cfg" / "sdxl-base"
    assert inspect(str(make(tmp_path, "sdxl"))).native_resolution == 64
