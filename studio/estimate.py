"""Numbers shown before training: LoRA size and steps (pure Python, instant).

These update live as the artist drags the rank, so they use only layer shapes
(studio/base_model/layers.py) and arithmetic, never a model load. GPU memory is not guessed
here: the memory planner counts it (training/memory_plan.py, studio/machine/memory_fit.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.base_model.inspect import ModelInfo
from studio.base_model.layers import Layer
from studio.dataset import plan
from studio.config import TrainConfig, unet_targets
from studio.units import human_bytes, human_count, human_duration  # noqa: F401 - re-exported



def matches(name: str, targets: tuple[str, ...]) -> bool:
    """PEFT's rule for a list of target_modules: the module name equals a target or ends with
    '.' + target (peft/tuners/tuners_utils.py `check_target_module_exists`)."""
    return any(name == t or name.endswith("." + t) for t in targets)


def targeted(layers: tuple[Layer, ...] | list[Layer], targets: tuple[str, ...]) -> list[Layer]:
    return [layer for layer in layers if matches(layer.name, targets)]


def lora_params(layers: list[Layer], rank: int) -> int:
    """LoRA adds A (r x in·k) and B (out x r) to each wrapped layer: r·(in·k + out) parameters
    (Hu et al. 2021, "LoRA" §4; for a conv, A is the kh x kw conv, B a 1x1 conv)."""
    return sum(rank * (layer.n_in * layer.kernel + layer.n_out) for layer in layers)


def plan_steps(cfg: TrainConfig, items: list) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps) for a dataset's Items (Report.training_items(),
    in scan order), exactly as the engine plans them (studio/dataset/plan.py): minus the held-out
    validation images, each image its folder's repeats, batches within one aspect bucket."""
    return plan.item_steps(items, cfg)


@dataclass(frozen=True)
class Estimate:
    layers: int  # wrapped layers (UNet, plus the text encoder's when it is trained)
    params: int  # trainable LoRA parameters
    unet_params: int  # 0 = unknown
    file_bytes: int

    @property
    def share(self) -> float | None:
        return self.params / self.unet_params if self.unet_params else None


def file_size(params: int, n_layers: int, save_dtype: str) -> int:
    """Bytes of the kohya .safetensors file: the weights, an alpha scalar per layer, and the
    JSON header (≈ 160 bytes of key and offsets per tensor plus ≈ 4 KB of metadata)."""
    per_value = 2 if save_dtype == "fp16" else 4
    tensors = 3 * n_layers  # lora_down, lora_up, alpha
    return params * per_value + n_layers * per_value + tensors * 160 + 4096


def estimate(info: ModelInfo, cfg: TrainConfig) -> Estimate | None:
    """The LoRA for `cfg` on the model `info` describes; None when its layers are unknown."""
    if not info.layers:
        return None
    wrapped = targeted(info.layers, unet_targets(cfg))
    if cfg.train_text_encoder:
        wrapped += list(info.text_layers)
    params = lora_params(wrapped, cfg.rank)
    return Estimate(len(wrapped), params, info.unet_params,
                    file_size(params, len(wrapped), cfg.save_dtype.value))
