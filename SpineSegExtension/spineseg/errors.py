"""Exceptions that carry a message meant for the user."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .exits import EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK  # re-exported

__all__ = ["SpineSegError", "InputError", "DiskFullError", "ModelError", "CancelledError", "exit_code", "error_line",
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


def exit_code(error: BaseException) -> int:
    """The exit code every SpineSeg program (``spineseg``, ``python -m spineseg.training``, the batch) ends with
    for ``error``: 130 a stop (Ctrl-C, SIGTERM), 3 a model that cannot be used, 2 bad input or options (any other
    SpineSegError, or a ValueError), 1 anything else."""
    if isinstance(error, (CancelledError, KeyboardInterrupt)):
        return EXIT_INTERRUPTED
    if isinstance(error, ModelError):
        return EXIT_MODEL
    if isinstance(error, (SpineSegError, ValueError)):
        return EXIT_INPUT
    return EXIT_FAILURE


def error_line(program: str, error: BaseException) -> str:
    """The one line on stderr for an error meant for the user: ``PROGRAM: model error: ...`` or ``PROGRAM: error: ...``."""
    kind = "model error" if exit_code(error) == EXIT_MODEL else "error"
    return f"{program}: {kind}: {error}"
