"""The app settings, loaded once at start-up and saved whenever something worth remembering
changes."""

from __future__ import annotations

from pathlib import Path

from studio import settings


class SettingsStore:
    def __init__(self, path: Path | None = None):
        self.path = path or settings.default_path()
        self.data = settings.load(self.path)  # never raises; problems are in data.warnings
        self.save_error = ""

    def save(self) -> bool:
        try:
            settings.save(self.data, self.path)
        except OSError as exc:  # a read-only config folder must not break the app
            self.save_error = f"Could not save the app settings to {self.path}: {exc}"
            return False
        return True
