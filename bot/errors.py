"""Domain errors: each carries a message for the person who typed the command and how to fix it."""

from __future__ import annotations


class WarroomError(Exception):
    """Something a responder asked for cannot be done; nothing was written."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(WarroomError):
    """The command's text was not understood or breaks a limit."""


class NotAnIncidentChannel(WarroomError):
    """A command that needs a war room was used elsewhere."""


class NothingToChange(WarroomError):
    """The requested change is already the current state."""
