"""The one kind of error a user can act on: what went wrong, and what to do next."""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input or setup (not a bug). `hint` says what to do; `field` is
    the setting or file it concerns, so the GUI can point at it."""

    field = ""

    def __init__(self, message: str, hint: str, field: str | None = None):
        super().__init__(message)
        self.hint = hint
        if field is not None:
            self.field = field
