"""The PyTorch build chosen for each OS × GPU × driver (studio/machine/install_plan.py), as a pure table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from studio.machine.install_plan import Gpu, choose_torch, gpu_unused_warning, parse_nvidia_smi

RTX3090 = Gpu("NVIDIA GeForce RTX 3090", (581, 57), (8, 6))
RTX4090_OLD = Gpu("NVIDIA GeForce RTX 4090", (536, 40), (8, 9))
RTX5090 = Gpu("NVIDIA GeForce RTX 5090", (581, 80), (12, 0))
RTX5090_OLD = Gpu("NVIDIA GeForce RTX 5090", (566, 3), (12, 0))
GTX1080 = Gpu("NVIDIA GeForce GTX 1080", (581, 57), (6, 1))
V100 = Gpu("Tesla V100-SXM2-16GB", (550, 54, 15), (7, 0))
T4 = Gpu("Tesla T4", (570, 133, 20), (7, 5))
ANCIENT = Gpu("GeForce GTX 770", (470, 5), (3, 0))
OLD_DRIVER = Gpu("NVIDIA GeForce RTX 3060", (516, 94), (8, 6))


@pytest.mark.parametrize("system, machine, gpus, requirement, device, problem", [
    # No NVIDIA GPU: the CPU build (Linux/Windows x86), Apple's MPS build on Apple silicon.
    ("Linux", "x86_64", [], "torch==2.13.0+cpu", "cpu", False),
    ("Windows", "AMD64", [], "torch==2.13.0+cpu", "cpu", False),
    ("Darwin", "arm64", [], "torch==2.13.0", "mps", False),
    ("Darwin", "x86_64", [], "torch==2.13.0", "cpu", True),
    # Windows + NVIDIA: never PyPI's CPU-only wheel.
    ("Windows", "AMD64", [RTX3090], "torch==2.13.0+cu130", "cuda", False),
    ("Windows", "AMD64", [RTX4090_OLD], "torch==2.13.0+cu126", "cuda", False),
    ("Windows", "AMD64", [GTX1080], "torch==2.13.0+cu126", "cuda", False),
    ("Windows", "AMD64", [RTX5090], "torch==2.13.0+cu130", "cuda", False),
    # Blackwell needs the CUDA 13 build, hence driver ≥ 580: an older driver is said loudly.
    ("Windows", "AMD64", [RTX5090_OLD], "torch==2.13.0+cpu", "cpu", True),
    ("Linux", "x86_64", [RTX5090_OLD], "torch==2.13.0+cpu", "cpu", True),
    # Linux: the driver picks the CUDA line; Pascal/Volta only exist in the 12.6 build.
    ("Linux", "x86_64", [RTX3090], "torch==2.13.0+cu130", "cuda", False),
    ("Linux", "x86_64", [T4], "torch==2.13.0+cu126", "cuda", False),
    ("Linux", "x86_64", [V100], "torch==2.13.0+cu126", "cuda", False),
    ("Linux", "x86_64", [GTX1080], "torch==2.13.0+cu126", "cuda", False),
    ("Linux", "x86_64", [OLD_DRIVER], "torch==2.13.0+cpu", "cpu", True),
    ("Linux", "x86_64", [ANCIENT], "torch==2.13.0+cpu", "cpu", True),
    # Several GPUs: one build that runs on all of them.
    ("Linux", "x86_64", [RTX3090, GTX1080], "torch==2.13.0+cu126", "cuda", False),
    ("Linux", "x86_64", [RTX5090, GTX1080], "torch==2.13.0+cpu", "cpu", True),
])
def test_the_build_fits_the_machine(system, machine, gpus, requirement, device, problem):
    choice = choose_torch(system, machine, gpus)
    assert (choice.requirement, choice.device, choice.problem) == (requirement, device, problem)
    if "+cu" in requirement:
        tag = requirement.split("+")[1]
        assert choice.pip_args() == [requirement, "--extra-index-url",
                                     f"https://download.pytorch.org/whl/{tag}"]
        assert any(x.startswith("bitsandbytes==") for x in choice.extras)
        assert any(x.startswith("torchao==") for x in choice.extras)
    else:
        assert not choice.extras


def test_an_old_driver_is_named_with_the_version_to_install():
    note = choose_torch("Windows", "AMD64", [RTX5090_OLD]).note
    assert "NOT be used" in note and "566.3" in note and "580.88" in note
    note = choose_torch("Linux", "x86_64", [OLD_DRIVER]).note
    assert "516.94" in note and "525.60.13" in note


def test_nvidia_smi_rows_are_parsed():
    text = ("NVIDIA GeForce RTX 3090, 581.57, 8.6\n"
            "Tesla V100-SXM2-16GB, 550.54.15, 7.0\n"
            "garbage line\n\n")
    assert parse_nvidia_smi(text) == [RTX3090, V100]


def test_a_gpu_present_but_unused_is_said_loudly():
    assert "RTX 3090" in gpu_unused_warning(False, [RTX3090])
    assert gpu_unused_warning(True, [RTX3090]) == ""
    assert gpu_unused_warning(False, []) == ""


def test_bootstrap_imports_the_table_before_anything_is_installed():
    # bootstrap runs with the system Python: the table must need the standard library only.
    code = ("import runpy, sys; sys.argv=['x']; "
            "g = runpy.run_path('scripts/bootstrap.py', run_name='probe'); "
            "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'numpy','PIL','torch','tomli_w','platformdirs'}))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
