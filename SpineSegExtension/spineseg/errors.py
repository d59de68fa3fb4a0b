"""Exceptions that carry a message meant for the user."""

from __future__ import annotations

__all__ = ["SpineSegError", "InputError", "ModelError", "CancelledError"]


class SpineSegError(Exception):
    """Base class: the message names the problem and what to do about it."""


class InputError(SpineSegError, ValueError):
    """The input image, label file or option cannot be used."""


class ModelError(SpineSegError):
    """A model file or manifest is missing, corrupt or does not fit the task."""


class CancelledError(SpineSegError):
    """The user cancelled a running job."""
