"""Build LoRA Studio's "pocket" base model and demo style set (issue 3).

The pocket model is a real Stable Diffusion architecture (AutoencoderKL + UNet2DConditionModel + CLIPTextModel,
diffusers folder layout) shrunk until it trains and runs on a 2-core CPU with no downloads. See README.md here for
the recipe, the seed, timings and measured figures.
"""
