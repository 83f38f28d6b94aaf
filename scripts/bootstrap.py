"""Set up LoRA Studio's virtual environment on a fresh machine, then run the demo or the tests.

    python3 scripts/bootstrap.py demo   # install, then open the app on the demo project
    python3 scripts/bootstrap.py test   # install, then run the test suite
    python3 scripts/bootstrap.py train-demo   # install, then train the demo LoRA headless
    python3 scripts/bootstrap.py install      # install only (and make the launcher)

On Windows, write `py` for `python3`. Standard library only: this runs before anything is installed.

Why a script instead of a bare `pip install`: torch must be pinned *in the same pip command* as
diffusers/peft/accelerate, otherwise pip resolves their `torch>=…` to the newest build and downloads
several GB of CUDA wheels even on a machine without a GPU. Which build fits the machine (CPU, the
CUDA line for the driver and the card, Apple's MPS) is decided by `studio/machine/install_plan.py`, a pure
table that is tested over OS × GPU × driver (tests/test_install_plan.py).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from studio.machine import install_plan  # noqa: E402 - standard library only, importable before installing

VENV = ROOT / ".venv"
EXTRAS = "train,gui,dev"


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def pip(*args: str) -> int:
    cmd = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def install_torch(choice: install_plan.TorchChoice) -> list[str]:
    """Install the chosen build; returns the pip arguments that pin it for the next command."""
    args = choice.pip_args()
    # A CPU wheel may sit in the machine's local wheel folder: try that before PyTorch's index.
    if choice.device == "cpu" and choice.index_url and pip(choice.requirement) == 0:
        return [choice.requirement]
    if pip(*args) != 0:
        sys.exit(f"Could not install {choice.requirement}. Check the network connection and "
                 "run this again.")
    return args


def verify_device(choice: install_plan.TorchChoice) -> None:
    """After the install: does PyTorch really see the GPU the table chose a build for?"""
    if choice.device != "cuda":
        return
    probe = "import torch; print(torch.cuda.is_available())"
    out = subprocess.run([str(venv_python()), "-c", probe], capture_output=True, text=True).stdout
    if out.strip() != "True":
        print("\n" + "!" * 78 + "\nWARNING: " + install_plan.gpu_unused_warning(False) +
              "\n" + "!" * 78 + "\n", flush=True)


def ensure_installed() -> None:
    stamp = VENV / ".lora-studio-installed"
    choice = install_plan.choose_torch(platform.system(), platform.machine(),
                                       install_plan.query_gpus())
    wanted = (ROOT / "pyproject.toml").read_text() + choice.requirement
    if stamp.exists() and stamp.read_text() == wanted:
        return
    if choice.note:
        banner = "!" * 78 if choice.problem else "-" * 78
        print(f"{banner}\n{choice.note}\n{banner}", flush=True)
    if not venv_python().exists():
        print(f"Creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    torch_args = install_torch(choice)
    if pip("-e", f"{ROOT}[{EXTRAS}]", *torch_args, *choice.extras) != 0:
        sys.exit("Installing LoRA Studio's dependencies failed (see pip's message above).")
    # CLIP tokenizer files for single-file checkpoints, generated from the MIT BPE table in the
    # open-clip-torch wheel (scripts/make_clip_bpe.py). Non-fatal: only single files need them.
    if subprocess.call([str(venv_python()), str(ROOT / "scripts" / "make_clip_bpe.py")]) != 0:
        print("warning: CLIP tokenizer files not generated (offline?); single-file checkpoints "
              "need them: run `python scripts/make_clip_bpe.py` once while online.", flush=True)
    verify_device(choice)
    write_launcher()
    stamp.write_text(wanted)


def write_launcher() -> Path | None:
    """A double-clickable launcher beside the README: .bat (Windows), .command (macOS),
    .desktop (Linux). It runs the installed app directly (no reinstall check)."""
    py = venv_python()
    system = platform.system()
    if system == "Windows":
        path, text = ROOT / "LoRA Studio.bat", f'@echo off\r\ncd /d "{ROOT}"\r\n' \
            f'start "" "{py.with_name("pythonw.exe")}" -m ui %*\r\n'
    elif system == "Darwin":
        path, text = ROOT / "LoRA Studio.command", f'#!/bin/sh\ncd "{ROOT}"\nexec "{py}" -m ui "$@"\n'
    else:
        path = ROOT / "lora-studio.desktop"
        text = ("[Desktop Entry]\nType=Application\nName=LoRA Studio\n"
                "Comment=Train a style LoRA from a folder of images\n"
                f'Exec="{py}" -m ui %f\nPath={ROOT}\nTerminal=false\n'
                "Categories=Graphics;\n")
    try:
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755)
    except OSError as exc:  # a read-only checkout: the commands in the README still work
        print(f"note: no launcher written ({exc})", flush=True)
        return None
    print(f"Launcher: {path} (double-click it to open LoRA Studio)", flush=True)
    return path


def parallel(args: list[str]) -> list[str]:
    """pytest-xdist options for the whole suite: one worker per core (at most 4: each holds
    torch and its tiny models, and the training tests start workers of their own), a test
    module per worker at a time so module fixtures (a trained run) are built once. Nearly
    every test runs one torch thread, so 2 cores finish in about half the time. Nothing when
    the caller chose (-n, -p no:xdist)."""
    if any(a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in args):
        return []
    workers = max(1, min(os.cpu_count() or 1, 4))
    return ["-n", str(workers), "--dist", "loadscope"] if workers > 1 else []


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
        return subprocess.call([py, "-m", "pytest", *parallel(rest), *rest], cwd=ROOT, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
