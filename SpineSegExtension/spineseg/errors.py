"""Exceptions that carry a message meant for the user."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .exits import EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK  # re-exported

__all__ = ["SpineSegError", "InputError", "DiskFullError", "ModelError", "CancelledError",
           "EXIT_OK", "EXIT_FAILURE", "EXIT_INPUT", "EXIT_MODEL", "EXIT_INTERRUPTED"]


class SpineSegError(Exception):
    """Base class: the message names the problem and what to do about it."""


class InputError(SpineSegError, ValueError):
    """The input image, label file or option cannot be used."""


class DiskFullError(InputError):
    """The disk (or the user's quota) is full: like an unwritable output folder, the place to write needs
    changing, so it ends the same way (exit code 2, one line)."""

    def __init__(self, target: str | Path, reason: str, outcome: str = "") -> None:
        super().__init__(f"the disk is full: no space left to write {target} ({reason}); free some space or "
                         f"write to another disk{outcome}")
        self.target, self.reason = target, reason


class ModelError(SpineSegError):
    """A model file or manifest is missing, corrupt or does not fit the task."""


class CancelledError(SpineSegError):
    """The user cancelled a running job; ``written`` lists the complete outputs published before the stop arrived."""

    def __init__(self, message: str = "cancelled", written: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.written = tuple(written)
