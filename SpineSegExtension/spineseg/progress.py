"""Progress reporting and cancellation, shared by the CLI, Slicer and training.

Long-running functions take a ``progress`` callable ``(fraction, message)``
and call it now and then; a callback raises :class:`CancelledError` to stop
the work cleanly between two steps.
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from .errors import CancelledError

__all__ = ["ProgressCallback", "no_progress", "CancelToken", "scaled"]


class ProgressCallback(Protocol):
    def __call__(self, fraction: float, message: str) -> None: ...


def no_progress(fraction: float, message: str) -> None:
    """Default callback: ignores progress, never cancels."""


class CancelToken:
    """A flag another thread (a Cancel button, a signal handler) can set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`CancelledError` if cancel() was called."""
        if self._event.is_set():
            raise CancelledError("cancelled by the user")


def scaled(progress: ProgressCallback, start: float, stop: float) -> ProgressCallback:
    """Map a sub-task's 0..1 progress onto ``start..stop`` of the parent's."""

    def report(fraction: float, message: str) -> None:
        progress(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return report


def with_cancel(progress: ProgressCallback, token: CancelToken) -> Callable[[float, str], None]:
    """Wrap a callback so that each report also checks the cancel token."""

    def report(fraction: float, message: str) -> None:
        token.check()
        progress(fraction, message)

    return report


__all__.append("with_cancel")
