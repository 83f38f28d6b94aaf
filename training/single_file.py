"""Load a single-file SD1.x / SD2.x / SDXL `.safetensors` checkpoint fully offline.

diffusers' `from_single_file` fetches configs and tokenizers from the Hub unless it gets
`config=<local folder>` (`local_files_only=True` alone is overridden: lora-formats.md §8.1-8.2),
so each load goes: detect the file from its header (studio.base_model.detect) -> pick the shipped
config folder in assets/configs (studio.base_model.configs) -> assemble a cached folder with
those configs, the generated CLIP BPE files (training.clip_bpe) and the chosen prediction type /
zero-SNR in the scheduler config -> `from_single_file(..., config=folder, local_files_only=True)` with the Hub switched off -> check
every tokenizer and that no weight was left unloaded. Issue 6.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from studio import atomic
from studio.base_model import configs
from studio.base_model.detect import CheckpointRefused, Detected, detect, training_prediction
from studio.errors import UserError
from training import clip_bpe

PIPELINES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline",
             "sdxl": "StableDiffusionXLPipeline"}
TOKENIZERS = {"tokenizer": "text_encoder", "tokenizer_2": "text_encoder_2"}
A_CAT = [49406, 320, 2368, 49407]  # CLIP ids of "a cat" (lora-formats.md §8.3)
CLIP_VOCAB = 49408
IDENTITY_FILE = "checkpoint.json"
FORMAT_VERSION = 1  # bump when the assembled folder's layout changes


class SingleFileError(UserError):
    """A single-file checkpoint that cannot be loaded offline, with what to do about it."""
    field = "base_model"


@dataclass
class LoadedCheckpoint:
    detected: Detected
    architecture: str  # "sd1" | "sd2" | "sdxl"
    version: str  # kohya ss_base_model_version family: sd_v1 / sd_v2 / sdxl_base_v1-0
    prediction_type: str  # what the noise scheduler was set to (override or detected)
    zero_terminal_snr: bool
    folder: Path  # the assembled config folder; its component subfolders name the checkpoint
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    noise_scheduler: object  # DDPMScheduler from the assembled scheduler config
    tokenizer_2: object = None  # SDXL only
    text_encoder_2: torch.nn.Module | None = None  # SDXL only (CLIPTextModelWithProjection)


def identity(path: Path) -> dict:
    """What names this checkpoint for caches: path, size, mtime and the header's SHA-256.

    Cheap (no 2-7 GB hash); a file rewritten in place changes mtime, a merge saved elsewhere has
    another path. Written into the assembled folder's component subfolders so that
    training/cache.py's folder fingerprints differ between checkpoints of one architecture.
    """
    st = path.stat()
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        header = hashlib.sha256(fh.read(min(length, 100 * 1024 * 1024))).hexdigest()
    return {"checkpoint": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "header_sha256": header}


def _patched_scheduler(config: dict, prediction_type: str, zero_snr: bool) -> dict:
    config = dict(config, prediction_type=prediction_type)
    if zero_snr:
        # Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed": rescale
        # the betas to zero terminal SNR (what a `ztsnr` model was trained with) and sample with
        # trailing timesteps. DDPM/DDIM/Euler read these keys; PNDM ignores them.
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return config


def _config_files(folder: Path) -> list[Path]:
    """The files assembled from a config source: JSON configs and tokenizer text files (a full
    diffusers folder may serve as source; its weights are neither read nor copied)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".txt")
                  and not p.name.startswith("."))


def _dir_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in _config_files(folder):
        digest.update(f"{p.relative_to(folder).as_posix()}\n".encode() + p.read_bytes())
    return digest.hexdigest()


def assemble(source: Path, dest_root: Path, prediction_type: str, zero_snr: bool,
             ident: dict, bpe: Path | None) -> Path:
    """A complete config folder under `dest_root`, reused when an identical one exists.

    Copies the JSON configs (and any tokenizer files the source has), fills tokenizer folders
    without vocab.json/merges.txt from `bpe`, patches the scheduler, and puts IDENTITY_FILE in
    every component subfolder. Built in a temp folder and renamed into place (atomic for readers).
    """
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, ident, prediction_type, zero_snr,
                                     _dir_digest(source), str(bpe)], sort_keys=True).encode())
    final = dest_root / key.hexdigest()[:20]
    if (final / "model_index.json").is_file():
        return final
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".assemble-", dir=dest_root))
    try:
        for src in _config_files(source):
            rel = src.relative_to(source)
            data = src.read_bytes()
            if rel.as_posix() == "scheduler/scheduler_config.json":
                data = json.dumps(_patched_scheduler(json.loads(data), prediction_type, zero_snr),
                                  indent=2, sort_keys=True).encode()
            atomic.write_bytes(tmp / rel, data)
        for sub in [p for p in tmp.iterdir() if p.is_dir()]:
            if sub.name.startswith("tokenizer") and not (sub / "vocab.json").is_file():
                if bpe is None:
                    raise SingleFileError(f"{source / sub.name} has no tokenizer files.",
                                          "Generate them: python scripts/make_clip_bpe.py")
                for name in ("vocab.json", "merges.txt"):
                    atomic.write_bytes(sub / name, (bpe / name).read_bytes())
            elif not sub.name.startswith(("tokenizer", "scheduler")):
                atomic.write_text(sub / IDENTITY_FILE, json.dumps(ident, indent=2) + "\n")
        atomic.write_text(tmp / IDENTITY_FILE, json.dumps(ident, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process assembled the same folder first
            if not (final / "model_index.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def hub_offline():
    """Hub off for the duration: huggingface_hub reads HF_HUB_OFFLINE once at import, so the
    constant is switched too (lora-formats.md §8.3: offline, a miss fails at once, no hang)."""
    from huggingface_hub import constants

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def check_tokenizer(name: str, tok, text_encoder, expected_pad: str | None) -> None:
    """transformers 5 silently builds a 2-token tokenizer when files are missing (§8.2)."""
    vocab = text_encoder.config.vocab_size
    if vocab == CLIP_VOCAB:
        ids = tok("a cat").input_ids
        if len(tok) != CLIP_VOCAB or ids != A_CAT:
            raise SingleFileError(f"{name} is broken: {len(tok)} entries, 'a cat' -> {ids} "
                                  f"(expected {CLIP_VOCAB} and {A_CAT}).",
                                  "Regenerate the CLIP files: python scripts/make_clip_bpe.py")
    elif not 258 < len(tok) <= vocab:
        raise SingleFileError(f"{name} has {len(tok)} entries for a text encoder of {vocab}.",
                              "The tokenizer files don't belong to this model.")
    if expected_pad is not None and tok.pad_token != expected_pad:
        # SDXL's second encoder (OpenCLIP) was trained padding with "!" (id 0), not EOS.
        raise SingleFileError(f"{name} pads with {tok.pad_token!r}, not {expected_pad!r}.",
                              "The tokenizer config is wrong; reinstall LoRA Studio's assets.")


def _check_loaded(pipe, path: Path) -> None:
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        meta = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if meta:  # from_single_file leaves weights it found no key for on the meta device
            raise SingleFileError(f"{path.name}: the {name} is incomplete ({len(meta)} weights "
                                  f"missing, e.g. {meta[0]}).",
                                  "The file is mis-packed or truncated; use an intact copy.")


def load(path: str | Path, *, prediction_type: str | None = None,
         zero_terminal_snr: bool | None = None, config_folder: Path | None = None,
         torch_dtype: torch.dtype = torch.float32, cache_root: Path | None = None,
         bpe_folder: Path | None = None) -> LoadedCheckpoint:
    """Load a checkpoint's components offline. `prediction_type`/`zero_terminal_snr` override
    the detected values (None = detected); `config_folder` replaces the shipped config folder
    (tests with tiny models); `bpe_folder` defaults to the clip_bpe cache (never downloads)."""
    path = Path(path)
    try:  # the same two calls give the GUI's verdict (studio.base_model.inspect)
        found = detect(path)
        prediction = training_prediction(path, found, prediction_type)
    except CheckpointRefused as exc:
        raise SingleFileError(str(exc), exc.hint) from None
    zero_snr = found.zero_terminal_snr if zero_terminal_snr is None else zero_terminal_snr
    source = Path(config_folder) if config_folder else \
        configs.config_folder(found.architecture, prediction)
    bpe = _bpe(bpe_folder, source)
    root = Path(cache_root) if cache_root else clip_bpe.default_dir().parent / "single-file"
    folder = assemble(source, root, prediction, zero_snr, identity(path), bpe)
    extra = {}
    if found.architecture == "sd1" and flat_text_encoder(path):
        extra["text_encoder"] = _flat_text_encoder(path, folder, torch_dtype)
    pipe = _from_single_file(path, found.architecture, folder, torch_dtype, **extra)
    _check_loaded(pipe, path)
    for tok_name, te_name in TOKENIZERS.items():
        tok = getattr(pipe, tok_name, None)
        if tok is not None:
            cfg = json.loads((folder / tok_name / "tokenizer_config.json").read_text())
            check_tokenizer(tok_name, tok, getattr(pipe, te_name), cfg.get("pad_token"))
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    return LoadedCheckpoint(found, found.architecture, configs.VERSIONS[found.architecture],
                            prediction, zero_snr, folder, pipe.tokenizer, pipe.text_encoder,
                            pipe.vae, pipe.unet, scheduler, getattr(pipe, "tokenizer_2", None),
                            getattr(pipe, "text_encoder_2", None))


def _bpe(bpe_folder: Path | None, source: Path) -> Path | None:
    if all((sub / "vocab.json").is_file() for sub in source.glob("tokenizer*")):
        return None  # the config folder brings its own tokenizer files
    try:
        return clip_bpe.ensure_bpe(bpe_folder, download=False)
    except clip_bpe.BpeUnavailable as exc:
        raise SingleFileError(str(exc), exc.hint) from None


LDM_TE = "cond_stage_model.transformer."


def flat_text_encoder(path: Path) -> bool:
    """Whether the SD1 text encoder is stored without `text_model.` in its names (pre-2022
    tools; transformers >= 5.6 saves CLIPTextModel flat too). diffusers' single-file reader only
    knows `cond_stage_model.transformer.text_model.*` (its is_clip_model), A1111 and ComfyUI
    read both (issue 13)."""
    from studio.base_model import detect as cd
    from studio.safetensors_header import read_header

    table = read_header(path)[0]
    return cd.SD1_TE_OLD in table and cd.SD1_TE not in table


def _flat_text_encoder(path: Path, folder: Path, torch_dtype):
    """The CLIP text encoder of a flat-layout file, built from the assembled config and loaded
    tensor by tensor (safetensors, no pickle); every weight must be found."""
    from safetensors import safe_open
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    own = model.state_dict()
    wrapped = any(k.startswith("text_model.") for k in own)  # transformers < 5.6
    state = {}
    with safe_open(str(path), "pt") as fh:
        for key in fh.keys():
            if key.startswith(LDM_TE):
                name = key[len(LDM_TE):].removeprefix("text_model.")
                name = f"text_model.{name}" if wrapped else name
                if name in own:
                    state[name] = fh.get_tensor(key)
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    if missing:
        raise SingleFileError(f"{path.name}: the text encoder is incomplete ({len(missing)} "
                              f"weights missing, e.g. {missing[0]}).",
                              "The file is mis-packed or truncated; use an intact copy.")
    model.load_state_dict(state, strict=False)
    return model.to(torch_dtype).eval()


def _from_single_file(path: Path, architecture: str, folder: Path, torch_dtype, **components):
    import diffusers

    pipeline_class = getattr(diffusers, PIPELINES[architecture])
    extra = dict(components) if architecture == "sdxl" else dict(
        safety_checker=None, feature_extractor=None, requires_safety_checker=False, **components)
    try:
        with hub_offline():
            return pipeline_class.from_single_file(
                str(path), config=str(folder), local_files_only=True,
                # None keeps diffusers' fp32 default (fp16/fp8 files are upcast on load) without
                # its "cast with to()" warning; other dtypes are passed on.
                torch_dtype=None if torch_dtype == torch.float32 else torch_dtype, **extra)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "meta tensor" in first:  # a weight with no key in the file was left unloaded
            raise SingleFileError(f"{path.name}: the model is incomplete (weights missing).",
                                  "The file is mis-packed or truncated; use an intact copy.") \
                from None
        raise SingleFileError(f"Could not load {path.name} as {architecture.upper()}: {first}",
                              "The file may be damaged or a variant LoRA Studio doesn't know; "
                              "try the model's diffusers folder.") from None

