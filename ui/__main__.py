"""`python -m ui`: the LoRA Studio desktop app (see ui/app.py for the options)."""

import sys

from ui.app import main

sys.exit(main())
