"""What this machine can do: the PyTorch build for its GPU, GPU memory fit, free disk space."""
