"""Set up LoRA Studio's virtual environment on a fresh machine, then run the demo or the tests.

    python3 scripts/bootstrap.py demo   # install, then open the app on the demo project
    python3 scripts/bootstrap.py test   # install, then run the test suite
    python3 scripts/bootstrap.py train-demo   # install, then train the demo LoRA headless

Standard library only: this runs before anything is installed.

Why a script instead of a bare `pip install`: torch must be pinned *in the same pip command* as
diffusers/peft/accelerate, otherwise pip resolves their `torch>=…` to the newest CUDA build and
downloads several GB of nvidia-* wheels even on a machine without a GPU
(../shared/reference/machine-notes.md §1, "CUDA trap 1"). The script picks the build:
NVIDIA GPU present -> the default PyPI wheel (CUDA on Linux); Linux without one -> the `+cpu` wheel.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
TORCH_VERSION = "2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
EXTRAS = "train,gui,dev"


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def torch_requirement() -> tuple[str, list[str]]:
    """The torch pin and any extra pip arguments needed to get the right build."""
    if has_nvidia_gpu() or platform.system() != "Linux":
        # PyPI's Linux wheel is the CUDA build; macOS/Windows wheels on PyPI are CPU/MPS builds.
        return f"torch=={TORCH_VERSION}", []
    return f"torch=={TORCH_VERSION}+cpu", []


def pip(*args: str) -> int:
    cmd = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def ensure_installed() -> None:
    stamp = VENV / ".lora-studio-installed"
    wanted = (ROOT / "pyproject.toml").read_text() + TORCH_VERSION
    if stamp.exists() and stamp.read_text() == wanted:
        return
    if not venv_python().exists():
        print(f"Creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    torch_pin, extra = torch_requirement()
    # The CPU wheel comes from the machine's local wheel folder or, failing that, PyTorch's CPU index.
    if pip(torch_pin, *extra) != 0 and torch_pin.endswith("+cpu"):
        extra = ["--extra-index-url", TORCH_CPU_INDEX]
        if pip(torch_pin, *extra) != 0:
            sys.exit("Could not install torch. Check the network connection and run this again.")
    if pip("-e", f"{ROOT}[{EXTRAS}]", torch_pin, *extra) != 0:
        sys.exit("Installing LoRA Studio's dependencies failed (see pip's message above).")
    # --- CLIP tokenizer files for single-file checkpoints (issue 6) -----------------------------
    # Generated from the MIT BPE table in the open-clip-torch wheel (lora-formats.md §8.4).
    # Non-fatal: only single-file checkpoints need them, and the script can be rerun online.
    if subprocess.call([str(venv_python()), str(ROOT / "scripts" / "make_clip_bpe.py")]) != 0:
        print("warning: CLIP tokenizer files not generated (offline?); single-file checkpoints "
              "need them: run `python scripts/make_clip_bpe.py` once while online.", flush=True)
    # ---------------------------------------------------------------------------------------------
    stamp.write_text(wanted)


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else "demo"
    rest = sys.argv[2:]
    if what not in {"demo", "train-demo", "test", "install"}:
        sys.exit(f"usage: {sys.argv[0]} demo|train-demo|test|install")
    if sys.version_info < (3, 11):
        sys.exit("LoRA Studio needs Python 3.11 or newer.")
    ensure_installed()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    py = str(venv_python())
    if what == "demo":
        return subprocess.call([py, "-m", "ui", "--demo", *rest], cwd=ROOT, env=env)
    if what == "train-demo":
        return subprocess.call([py, "-m", "training", "demo", *rest], cwd=ROOT, env=env)
    if what == "test":
        return subprocess.call([py, "-m", "pytest", *rest], cwd=ROOT, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
