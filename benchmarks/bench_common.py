"""Shared by the benchmark scripts: model configs, machine facts, peak memory, the printed table."""
from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: every model here is built locally
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# Fallbacks for when assets/configs/<model>/<part>/config.json is missing (random weights).
SD15_UNET = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                 cross_attention_dim=768, attention_head_dim=8, sample_size=64,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SDXL_UNET = dict(block_out_channels=(320, 640, 1280), layers_per_block=2, sample_size=128,
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                 cross_attention_dim=2048, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, sample_size=512,
              up_block_types=("UpDecoderBlock2D",) * 4)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, projection_dim=768,
              num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
              hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1)
# "mid": the SD1.5 layout at 1/4 width (≈1/16 of the FLOPs), with a matching small VAE and CLIP.
MID = dict(unet=dict(SD15_UNET, block_out_channels=(80, 160, 320, 320), norm_num_groups=16,
                     cross_attention_dim=192),
           vae=dict(SD_VAE, block_out_channels=(32, 64, 128, 128)),
           text_encoder=dict(CLIP_L, hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                             num_attention_heads=4, projection_dim=192, vocab_size=1000))
FULL = {"sd15": dict(unet=SD15_UNET, vae=SD_VAE, text_encoder=CLIP_L), "mid": MID,
        "sdxl": dict(unet=SDXL_UNET)}


def config_of(model: str, part: str) -> tuple[dict, str]:
    """(config dict, where it came from): the shipped assets/configs when present."""
    folder = ROOT / "assets/configs" / {"sdxl": "sdxl-base"}.get(model, model)
    if model != "mid":
        for path in (folder / part / "config.json", folder / f"{part}.json"):
            if path.is_file():
                return json.loads(path.read_text()), str(path.relative_to(ROOT))
    return dict(FULL[model][part]), "embedded"


def scratch(prefix: str) -> Path:
    """A temporary folder, removed when the process exits."""
    import atexit
    import shutil
    import tempfile
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process (the kernel's high-water mark; psutil on Windows)."""
    try:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 2**20 if sys.platform == "darwin" else kb / 1024
    except ImportError:
        import psutil
        return psutil.Process().memory_info().peak_wset / 2**20


def watch_peak_rss(proc) -> list[int]:
    """Sample a child process's RSS every 50 ms in a thread; [peak bytes] fills in as it runs."""
    import psutil
    peak = [0]

    def sample():
        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                peak[0] = max(peak[0], p.memory_info().rss)
                time.sleep(0.05)
        except psutil.Error:
            pass
    threading.Thread(target=sample, daemon=True).start()
    return peak


def loadavg() -> list[float] | None:
    """1/5/15-minute load average: how busy the machine was (other processes skew timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine() -> dict:
    """The facts a reader needs to compare figures: CPU, cores, GPU, memory, load."""
    import psutil
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), ram_gb=round(psutil.virtual_memory().total / 2**30,
                                                            1), loadavg=loadavg())
    try:
        import torch
        info["torch"] = torch.__version__  # threads: per case (torch_threads)
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def table(rows: list[dict], cols: tuple[str, ...]) -> str:
    """A Markdown table of the rows that have the first column."""
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in cols) + " |"
            for r in rows if cols[0] in r]
    return "\n".join(out)
