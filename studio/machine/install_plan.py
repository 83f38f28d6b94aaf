"""Which PyTorch build fits this machine (OS × GPU × driver): one decision table, standard library only.

Used by `scripts/bootstrap.py` before anything is installed, and by the worker and the app to say
loudly when an NVIDIA GPU is present but PyTorch cannot use it.

Why a table instead of "pip install torch": PyPI's torch is a CPU-only build on Windows and, on Linux,
a CUDA 13 build that needs driver ≥ 580 and a Turing-or-newer card; older drivers and Pascal/Volta cards
then silently train on the CPU (10–20 s per SD1.5 step instead of < 0.2 s). PyTorch publishes one
build per CUDA line on its own index, each for a range of GPU architectures
(pytorch/pytorch RELEASE.md "PyTorch CUDA Support Matrix"; issues #172352, #178665, #190385):
  cu126 (legacy): Maxwell 5.0 … Hopper 9.0 — the only build for Pascal/Volta, no Blackwell;
  cu130 (stable): Turing 7.5 … Blackwell 10.0/12.0.
The driver minimums are NVIDIA's (CUDA Toolkit release notes, table "CUDA Toolkit and Corresponding
Driver Versions", minor-version compatibility rows): CUDA 12.x ≥ 525.60.13 (Linux) / 528.33
(Windows); CUDA 13.x ≥ 580.65.06 (Linux) / 580.88 (Windows).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

TORCH_VERSION = "2.13.0"
TORCH_INDEX = "https://download.pytorch.org/whl"
BITSANDBYTES = "bitsandbytes==0.50.2"  # AdamW 8-bit (training/optim.py), nf4 base; CUDA only
TORCHAO = "torchao==0.18.0"  # int8 / fp8 frozen base (training/quantize.py); BSD-3-Clause


@dataclass(frozen=True)
class Gpu:
    name: str
    driver: tuple[int, ...]       # e.g. (576, 2) or (580, 65, 6)
    compute_cap: tuple[int, int]  # e.g. (8, 6) for an RTX 3090
    memory_mib: int = 0           # memory.total (0 when nvidia-smi did not say)


@dataclass(frozen=True)
class CudaBuild:
    tag: str                         # the index folder and the wheel's local version: "cu130"
    cuda: str
    min_driver: dict[str, tuple[int, ...]]
    min_cap: tuple[int, int]
    max_cap: tuple[int, int]


# Newest first: the first build that fits every GPU wins.
CUDA_BUILDS = (
    CudaBuild("cu130", "13.0", {"Linux": (580, 65, 6), "Windows": (580, 88)}, (7, 5), (12, 0)),
    CudaBuild("cu126", "12.6", {"Linux": (525, 60, 13), "Windows": (528, 33)}, (5, 0), (9, 0)),
)


@dataclass(frozen=True)
class TorchChoice:
    requirement: str              # what pip installs: "torch==2.13.0+cu130"
    index_url: str | None         # PyTorch's index for that build (None: PyPI / the local wheels)
    device: str                   # "cuda", "mps" or "cpu": what training will run on
    extras: tuple[str, ...] = ()  # further packages for that device
    note: str = ""                # what the artist is told; "" when nothing needs saying
    problem: bool = False         # True when a GPU is present but will not be used

    def pip_args(self) -> list[str]:
        return [self.requirement, *(["--extra-index-url", self.index_url] if self.index_url else [])]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split(".") if part.isdigit())


def parse_nvidia_smi(csv_text: str) -> list[Gpu]:
    """Rows of `nvidia-smi --query-gpu=name,driver_version,compute_cap[,memory.total]
    --format=csv,noheader,nounits`."""
    gpus = []
    for line in csv_text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (3, 4):
            continue
        cap = _version(parts[2])
        memory = int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else 0
        if len(cap) == 2 and _version(parts[1]):
            gpus.append(Gpu(parts[0], _version(parts[1]), (cap[0], cap[1]), memory))
    return gpus


def query_gpus() -> list[Gpu]:
    """The machine's NVIDIA GPUs ([] without a driver). Never raises."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,compute_cap,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def _fits(build: CudaBuild, system: str, gpu: Gpu) -> bool:
    return (build.min_cap <= gpu.compute_cap <= build.max_cap
            and gpu.driver >= build.min_driver[system])


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


def choose_torch(system: str, machine: str, gpus: list[Gpu]) -> TorchChoice:
    """The torch build for `platform.system()`, `platform.machine()` and the NVIDIA GPUs found."""
    pin = f"torch=={TORCH_VERSION}"
    if system == "Darwin":
        if machine.lower() in {"arm64", "aarch64"}:
            return TorchChoice(pin, None, "mps", note="Apple GPU (MPS) build of PyTorch.")
        return TorchChoice(pin, None, "cpu", problem=True, note=(
            "PyTorch no longer supports the GPU of Intel Macs: training runs on the CPU "
            "(slow: minutes per step for SD1.5)."))
    cpu_pin = f"{pin}+cpu" if system in {"Linux", "Windows"} and machine.lower() in {
        "x86_64", "amd64"} else pin
    cpu = TorchChoice(cpu_pin, f"{TORCH_INDEX}/cpu" if cpu_pin != pin else None, "cpu")
    if not gpus:
        return cpu
    if system not in {"Linux", "Windows"} or machine.lower() not in {"x86_64", "amd64"}:
        return TorchChoice(pin, None, "cuda", (BITSANDBYTES, TORCHAO), note=(
            f"{gpus[0].name}: using PyPI's PyTorch for {system} {machine}; "
            "if training says it runs on the CPU, install a CUDA build by hand."))
    for build in CUDA_BUILDS:
        if all(_fits(build, system, gpu) for gpu in gpus):
            return TorchChoice(f"{pin}+{build.tag}", f"{TORCH_INDEX}/{build.tag}", "cuda",
                               (BITSANDBYTES, TORCHAO), note=(
                                   f"{gpus[0].name}: PyTorch for CUDA {build.cuda} (driver "
                                   f"{_dotted(gpus[0].driver)})."))
    return _cpu_with_reason(cpu, system, gpus)


def _cpu_with_reason(cpu: TorchChoice, system: str, gpus: list[Gpu]) -> TorchChoice:
    gpu = min(gpus, key=lambda g: g.driver)
    archs = [b for b in CUDA_BUILDS if b.min_cap <= gpu.compute_cap <= b.max_cap]
    if not archs:
        why = (f"{gpu.name} (compute capability {_dotted(gpu.compute_cap)}) is older than any "
               "GPU that PyTorch still supports")
    else:
        need = min(b.min_driver[system] for b in archs)
        if gpu.compute_cap >= (10, 0):
            need = CUDA_BUILDS[0].min_driver[system]  # Blackwell: only the CUDA 13 build
        why = (f"the NVIDIA driver {_dotted(gpu.driver)} is too old for {gpu.name}: "
               f"install driver {_dotted(need)} or newer from nvidia.com, then run this again")
    return TorchChoice(cpu.requirement, cpu.index_url, "cpu", problem=True,
                       note=f"Your GPU will NOT be used — {why}. Training would run on the CPU.")


def gpu_unused_warning(cuda_available: bool, gpus: list[Gpu] | None = None) -> str:
    """A loud sentence when an NVIDIA GPU is present but PyTorch cannot use it, else ""."""
    if cuda_available:
        return ""
    gpus = query_gpus() if gpus is None else gpus
    if not gpus:
        return ""
    return (f"An NVIDIA GPU ({gpus[0].name}) is present but PyTorch cannot use it, so this runs "
            "on the CPU (about 50× slower). Run `python scripts/bootstrap.py install` again to "
            "install the PyTorch build for your driver.")
