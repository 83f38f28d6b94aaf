"""The base model (the Stable Diffusion model a LoRA trains on): one verdict for GUI and worker.

`detect` reads a single-file checkpoint's header, `inspect` describes any `base_model` setting
(folder, single file, Hub id in the local cache) and says why training would refuse it,
`configs` names the shipped config folders single files load with, and `layers` gives the layer
shapes studio/estimate.py sizes a LoRA from. No torch, no Qt.
"""
