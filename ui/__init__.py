"""The LoRA Studio desktop app (PySide6). Never imports torch: training runs in a worker process."""

from ui import compat  # noqa: F401  (must run before any Qt drawing: see ui/compat.py)
