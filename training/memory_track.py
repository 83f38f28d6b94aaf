"""Counts the bytes a torch program holds, op by op, on meta tensors: the memory planner's meter.

`LiveBytes` is a TorchDispatchMode that sees every tensor an op returns, keeps a weak reference to
its storage and adds its size to the current phase's part ("activations", "optimizer", ...);
when the storage dies the bytes go away again. On meta tensors nothing is allocated, so a full
SDXL step can be counted on a laptop. The peak and the parts at the peak are what
`torch.cuda.max_memory_allocated()` would report, up to the CUDA allocator's rounding
(`rounding=512`) and what kernels allocate inside themselves (workspaces).

`OnMeta` lets the planner count on meta tensors, which dispatch in C++ (about 2.5x faster than
torch's FakeTensorMode, which the planner used before: an SDXL forward and backward counts in
1.7 s instead of 4.3 s). Meta tensors have no autocast and no fused attention of their own, so
it supplies both as the CPU would run them.

`CudaAutocast` makes the CPU's autocast behave like CUDA's where it changes memory: CUDA runs
group/layer norm, softmax and the other "autocast to float32" ops in fp32 (their outputs, saved
for backward, are twice the size); CPU autocast leaves them in the input's precision. A CPU-only
torch has no CUDA autocast to run, so CPU rules (real CPU tensors in tests, `OnMeta` when
counting) stand in for the GPU and this mode supplies the difference.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_DEVICE = torch.ops.prim.device.default
PARTS = ("weights", "lora", "text_encoders", "data", "activations", "gradients", "optimizer")


class LiveBytes(TorchDispatchMode):
    """Live storage bytes per part, their peak, and the parts at the peak."""

    def __init__(self, rounding: int = 1):
        super().__init__()
        self.rounding = rounding
        self.phase = "activations"  # the part new storages count towards
        self.now = dict.fromkeys(PARTS, 0)
        self.peak = 0
        self.at_peak = dict(self.now)
        self._live: dict[int, tuple[weakref.ref, str, int]] = {}

    def _size(self, storage) -> int:
        n = storage.nbytes()
        return -(-n // self.rounding) * self.rounding if n else 0

    def size(self, tensor: torch.Tensor) -> int:
        """The bytes a tensor's storage counts for (allocator rounding included)."""
        return self._size(tensor.untyped_storage())

    def _forget(self, key: int) -> None:
        _, part, size = self._live.pop(key)
        self.now[part] -= size

    def add(self, tensor: torch.Tensor, part: str | None = None) -> None:
        """Count a tensor's storage (once, however many views share it) towards `part`."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        size = self._size(storage)
        # The callback runs when the storage is freed: its bytes stop counting from then on.
        ref = weakref.ref(storage, lambda _, k=key: self._forget(k) if k in self._live else None)
        part = part or self.phase
        self._live[key] = (ref, part, size)
        self.now[part] += size

    def move(self, tensor: torch.Tensor, part: str) -> None:
        """Count an already counted storage towards another part (a gradient made in backward)."""
        key = id(tensor.untyped_storage())
        if key not in self._live:
            self.add(tensor, part)
            return
        ref, old, size = self._live[key]
        self.now[old] -= size
        self.now[part] += size
        self._live[key] = (ref, part, size)

    def add_module(self, module: torch.nn.Module, part: str, scale=None) -> None:
        """Count a module's parameters and buffers; `scale(name, tensor)` may override bytes
        (a quantized weight stored in fewer bytes than the tensor that stands in for it)."""
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            self.add(t, part)
            if scale is not None:
                key = id(t.untyped_storage())
                ref, p, size = self._live[key]
                new = int(scale(name, t, size))
                self.now[p] += new - size
                self._live[key] = (ref, p, new)

    def forget_module(self, module: torch.nn.Module) -> None:
        """Stop counting a module's parameters and buffers (it left the card)."""
        for t in [*module.parameters(), *module.buffers()]:
            key = id(t.untyped_storage())
            if key in self._live:
                self._forget(key)

    @property
    def total(self) -> int:
        return sum(self.now.values())

    def check_peak(self) -> None:
        total = self.total
        if total > self.peak:
            self.peak, self.at_peak = total, dict(self.now)

    def reset_peak(self) -> None:
        self.peak, self.at_peak = self.total, dict(self.now)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _DEVICE:  # tensor.device: no storage made; 2 of every 3 calls in an SDXL step
            return func(*args)
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.add(t)
        self.check_peak()
        return out


def _to_fp32(value):
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_fp32(v) for v in value)
    return value


# CUDA's "autocast to float32" ops that a Stable Diffusion step calls (torch.amp docs, "CUDA Ops
# that can autocast to float32"); CPU autocast keeps them in bf16/fp16.
FP32_OPS = {F.group_norm, F.layer_norm, F.softmax, F.log_softmax, F.mse_loss, F.softplus,
            torch.softmax, torch.log_softmax, torch.exp, torch.pow, torch.rsqrt, torch.log,
            torch.Tensor.softmax, torch.Tensor.log_softmax, torch.Tensor.exp, torch.Tensor.pow,
            torch.Tensor.__pow__, torch.Tensor.rsqrt, torch.Tensor.log, torch.cumsum,
            torch.Tensor.cumsum, torch.cumprod, torch.Tensor.cumprod, torch.norm,
            torch.Tensor.norm, F.normalize}


# What CPU and CUDA autocast run in the lower precision (torch.amp docs, "Ops that can autocast
# to bfloat16/float16"), as the Python functions a Stable Diffusion step calls them by.
LOWER_OPS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
             F.conv_transpose3d, F.prelu, F.scaled_dot_product_attention, torch.matmul,
             torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.mm,
             torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.baddbmm, torch.Tensor.baddbmm,
             torch.addmm, torch.Tensor.addmm, torch.addbmm, torch.einsum}
_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    """F.scaled_dot_product_attention as the CPU runs it (its flash kernel, which keeps the
    output and log-sum-exp for backward, as CUDA's memory-efficient kernel does). On meta
    tensors torch would pick the math path, which keeps the whole attention matrix."""
    return _FLASH(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


class OnMeta(TorchFunctionMode):
    """torch.autocast(dtype) for meta tensors, and the CPU's fused attention. With
    `cuda_fp32` CUDA's fp32 autocast ops run in fp32 as well (what `CudaAutocast` adds on the
    CPU). Like autocast, a float32 leaf that requires grad (a LoRA weight) is cast once per
    region and the cast kept until the region ends (autocast's weight cache)."""

    def __init__(self, dtype: torch.dtype, cuda_fp32: bool):
        super().__init__()
        self.dtype = dtype if dtype != torch.float32 else None
        self.cuda_fp32 = cuda_fp32 and self.dtype is not None
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __exit__(self, *exc):
        self.cache.clear()
        return super().__exit__(*exc)

    def _lower(self, value):
        if isinstance(value, torch.Tensor) and value.is_floating_point() \
                and value.dtype != self.dtype:
            if value.requires_grad and value.is_leaf and value.dtype == torch.float32:
                key = id(value)
                if key not in self.cache:
                    self.cache[key] = (value, value.to(self.dtype))
                return self.cache[key][1]
            return value.to(self.dtype)
        if isinstance(value, (list, tuple)):
            return type(value)(self._lower(v) for v in value)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.dtype is not None and func in LOWER_OPS:
            args, kwargs = self._lower(args), {k: self._lower(v) for k, v in kwargs.items()}
        elif self.cuda_fp32 and func in FP32_OPS:
            args, kwargs = _to_fp32(args), {k: _to_fp32(v) for k, v in kwargs.items()}
        if func is F.scaled_dot_product_attention:
            return _sdpa(*args, **kwargs)
        return func(*args, **kwargs)


class CudaAutocast(TorchFunctionMode):
    """Inside a CPU autocast region, run CUDA's fp32 ops in fp32 as CUDA autocast does."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FP32_OPS and torch.is_autocast_enabled("cpu"):
            args, kwargs = _to_fp32(args), {k: _to_fp32(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)
