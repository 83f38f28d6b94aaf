"""One verdict for any `base_model` setting (folder, single file, Hub id in the local cache): what
it is, its native size and layer shapes, and why training would refuse it, in the worker's words.

The worker locates and checks its base model with `locate` and `check_folder` /
`detect.training_prediction` before loading; the GUI and `python -m training check` call
`inspect`, which runs the same functions and shows their refusal text, so the Train button is
enabled exactly for the models the worker trains. Nothing here loads a weight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from studio.base_model import configs, detect, layers
from studio.base_model.configs import read_json
from studio.base_model.detect import BaseModelRefused, CheckpointRefused
from studio.base_model.layers import Layer

LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
SD1_CROSS = 768  # CLIP ViT-L width; an SD1-layout UNet with another width is a custom model


@dataclass(frozen=True)
class ModelInfo:
    path: Path | None
    architecture: str  # "SD 1.x", "SDXL", … or "" when unknown
    problem: str = ""  # why training would refuse it ("" = usable): the worker's own text
    unet_config: dict = field(default_factory=dict, repr=False)
    # Empty when neither weights nor a config could be read.
    layers: tuple[Layer, ...] = field(default=(), repr=False)
    unet_params: int = 0  # 0 = unknown
    exact: bool = False  # layers/params from the weights file (exact) or the config (derived)
    # Every text encoder's Linears, from their configs.
    text_layers: tuple[Layer, ...] = field(default=(), repr=False)
    family: str = ""  # "sd1" | "sd2" | "sdxl" (detect's names), "" when unknown
    prediction_type: str | None = None  # what training will use (after the setting's override)
    zero_terminal_snr: bool = False
    native_resolution: int = 0  # the size the model was trained at (px), 0 = unknown
    single_file: bool = False
    notes: tuple[str, ...] = ()  # what detection found worth telling (not problems)

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def summary(self) -> str:
        """"SDXL · v-prediction · zero-terminal SNR · single file", for the model picker."""
        parts = [self.architecture or "Diffusers model"]
        if self.prediction_type == "v_prediction":
            parts.append("v-prediction")
        if self.zero_terminal_snr:
            parts.append("zero-terminal SNR")
        if self.native_resolution:
            parts.append(f"native {self.native_resolution} px")
        parts.append("single file" if self.single_file else "folder")
        return " · ".join(parts)


def hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache folder of `org/name`, if it was downloaded before."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
    repo = Path(hub) / ("models--" + repo_id.replace("/", "--"))
    try:
        ref = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snapshot = repo / "snapshots" / ref
    return snapshot if snapshot.is_dir() else None


def _hub_id(value: str) -> bool:
    return value.count("/") == 1 and not value.startswith(("/", ".", "~")) and \
        not Path(value).is_absolute()


def locate(value: str, project_root: Path | None = None) -> tuple[Path, str]:
    """(a diffusers folder or single file, its display name) for a `base_model` setting: a path
    (relative to the project) or a Hub id already in the local cache. Raises BaseModelRefused."""
    value = value.strip()
    if not value:
        raise BaseModelRefused("No base model chosen.", "Choose a model folder or file.")
    path = Path(value).expanduser()
    if not path.is_absolute() and project_root is not None:
        path = project_root / path
    if path.suffix.lower() in detect.PICKLE_SUFFIXES:
        raise BaseModelRefused(f"{path.name} is a pickle checkpoint, which can run arbitrary code "
                               f"when loaded; LoRA Studio never opens those.", detect.CONVERT_HINT)
    if path.is_file() or path.suffix.lower() in detect.SAFETENSORS_SUFFIXES:
        if not path.is_file():
            raise BaseModelRefused(f"Base model not found: {path}",
                                   "Check the path in the Base model setting.")
        return path, path.stem
    if path.is_dir():
        return path, path.name
    if _hub_id(value):
        snapshot = hub_snapshot(value)
        if snapshot is None:
            raise BaseModelRefused(
                f"{value!r} is neither a folder on disk nor a model in the local Hugging Face "
                f"cache, and training never downloads.",
                f"Choose a model folder (Folder…) or file (File…), or download it once: "
                f"huggingface-cli download {value}")
        return snapshot, value
    raise BaseModelRefused(f"Base model not found: {path}",
                           "Check the path in the Base model setting.")


def check_folder(folder: Path) -> None:
    """Refuse a folder the worker can't load, from its JSON configs and file names alone."""
    if not (folder / "model_index.json").is_file() and not (folder / "unet").is_dir():
        raise BaseModelRefused(f"{folder} is not a diffusers model folder (no model_index.json).",
                               "Choose the folder that contains unet/, vae/, text_encoder/ and "
                               "tokenizer/, or a single .safetensors checkpoint.")
    unet = read_json(folder / "unet" / "config.json")
    if not unet:
        raise BaseModelRefused(f"{folder} has no readable unet/config.json.",
                               "The folder is incomplete; download or copy it again.")
    if not layers.weight_files(folder / "unet") and any((folder / "unet").glob("*.bin")):
        # The worker loads with use_safetensors=True: pickled weights are never unpickled.
        raise BaseModelRefused(f"{folder.name}'s UNet weights are pickle (.bin) files, which can "
                               f"run arbitrary code when loaded; LoRA Studio never opens those.",
                               detect.CONVERT_HINT)
    encoders = [read_json(folder / sub / "config.json") for sub in ("text_encoder",
                                                                    "text_encoder_2")]
    if configs.family_of(unet) != "sdxl":
        encoders = encoders[:1]
    widths = [te.get("hidden_size") for te in encoders]
    if all(isinstance(w, int) for w in widths) and sum(widths) != unet.get("cross_attention_dim"):
        raise BaseModelRefused(f"This model's UNet expects text features of width "
                               f"{unet.get('cross_attention_dim')}, its text encoders give "
                               f"{sum(widths)}: the parts belong to different models.",
                               "Use a complete model folder or checkpoint.")


def refusal(exc: BaseModelRefused) -> str:
    """The text the worker prints for this refusal (message and what to do), for the GUI."""
    return f"{exc} {exc.hint}".strip()


def inspect(value: str, project_root: Path | None = None,
            prediction_type: str | None = None) -> ModelInfo:
    """Describe the base model a `base_model` setting names; never raises. `prediction_type`
    is the Prediction type setting (None or "auto": what the model says)."""
    override = None if prediction_type in (None, "auto") else str(prediction_type)
    try:
        path, _ = locate(value, project_root)
    except BaseModelRefused as exc:
        return ModelInfo(None, "", refusal(exc))
    if path.is_file():
        return _inspect_file(path, override)
    return _inspect_folder(path, override)


def _inspect_folder(path: Path, override: str | None) -> ModelInfo:
    unet = read_json(path / "unet" / "config.json")
    family = configs.family_of(unet) if unet else ""
    label = LABELS.get(family, "")
    if family == "sd1" and unet.get("cross_attention_dim") != SD1_CROSS:
        label = "SD 1.x-style (small or custom)"
    try:
        check_folder(path)
        problem = ""
    except BaseModelRefused as exc:
        problem = refusal(exc)
    files = layers.weight_files(path / "unet")
    try:
        found, total = layers.header_layers(files) if files else ([], 0)
    except (OSError, ValueError):
        found, total = [], 0
    exact = bool(found)
    if not found:
        found = layers.config_layers(unet)
        total = layers.SD1_TOTAL_UNET if label == "SD 1.x" else 0
    scheduler = read_json(path / "scheduler" / "scheduler_config.json")
    return ModelInfo(path, label, problem, unet, tuple(found), total, exact,
                     tuple(layers.folder_text_layers(path)), family,
                     override or scheduler.get("prediction_type", "epsilon"),
                     bool(scheduler.get("rescale_betas_zero_snr")),
                     configs.native_resolution(path))


def _inspect_file(path: Path, override: str | None) -> ModelInfo:
    try:
        found = detect.detect(path)
    except CheckpointRefused as exc:
        return ModelInfo(path, "", refusal(exc), single_file=True)
    label = LABELS[found.architecture]
    problem, prediction = "", override or found.prediction_type
    try:
        prediction = detect.training_prediction(path, found, override)
    except CheckpointRefused as exc:
        problem = refusal(exc)
    folder = configs.config_folder(found.architecture, prediction)
    try:
        unet_layers, total = layers.header_layers([path], detect.UNET)
    except (OSError, ValueError):  # detect read this header a moment ago
        unet_layers, total = [], 0
    return ModelInfo(path, label, problem, read_json(folder / "unet" / "config.json"),
                     tuple(unet_layers), total, bool(unet_layers),
                     tuple(layers.folder_text_layers(folder)), found.architecture, prediction,
                     found.zero_terminal_snr, configs.native_resolution(folder), True,
                     tuple(found.notes))


def resolution_warning(info: ModelInfo, resolution: int) -> str:
    """Why `resolution` is a poor choice for this model ("" when it is near the native size).

    Far = under half or over 2.25x the native pixel count: SDXL at 768 or SD1.5 at 768 pass,
    SDXL at 512 or SD1.5 at 1024 do not. Shown by the Train tab and `check`, never enforced.
    """
    native = info.native_resolution
    if not native or not info.ok or not resolution:
        return ""
    area = (resolution / native) ** 2
    if 0.5 <= area <= 2.25:
        return ""
    name = info.architecture or "this model"
    effect = ("it draws poorly at sizes well below that, so the LoRA learns a blurry, off version "
              "of the style" if area < 1 else
              "training takes much longer and the model tends to repeat or distort subjects at "
              "sizes well above that")
    return (f"Resolution {resolution} px is far from {name}'s native {native} px: {effect}. "
            f"Use {native} px unless you know why.")
