"""The training dataset, one pipeline for the GUI and the worker: walk, decode, captions, verdict.

Modules: scanner (the one folder walk and check; `load` for the worker), report (Item, Finding,
Report, DatasetError), captions (the caption rule, decoder and edits), images (robust decoding),
augment (per-step caption rules), buckets and plan (what a run will do), summary (the Dataset
tab's filters and numbers over a Report).

`from studio import dataset; dataset.load(folder, exclude, repeats)` works as before. The names
below are imported on first use, so importing `studio.dataset.captions` for the GUI does not load
numpy and Pillow at start-up.
"""

from __future__ import annotations

import importlib

_API = {
    "load": "scanner", "scan": "scanner", "image_files": "scanner", "IMAGE_EXTENSIONS": "scanner",
    "Item": "report", "Finding": "report", "Report": "report", "DatasetError": "report",
    "SEVERITY": "report",
    "tag_frequency": "captions", "caption_file": "captions", "CAPTION_EXTENSIONS": "captions",
    "METADATA_FILE": "captions", "full_caption": "augment",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
