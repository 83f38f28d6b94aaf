"""Projects and their runs: the project folder, run folders, their LoRA files, history, report cards, delivery."""
