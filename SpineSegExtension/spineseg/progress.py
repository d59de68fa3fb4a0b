"""Progress reporting and cancellation, shared by the CLI, Slicer and training.

Long-running functions take a ``progress`` callable ``(fraction, message)``
and call it now and then; a callback raises :class:`CancelledError` to stop
the work cleanly between two steps.

Across processes (the CLI's ``--progress-format json``, read by the Slicer
module) progress travels as JSON lines: ``{"progress": 0.42, "message": "..."}``
while working and ``{"done": true, "outputs": {...}}`` at the end. Both the
writer and the parser of that protocol live here.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TextIO

from .errors import CancelledError

__all__ = [
    "ProgressCallback", "no_progress", "CancelToken", "scaled", "with_cancel",
    "ProtocolRecord", "progress_line", "done_line", "parse_protocol_line", "TextProgress",
]


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



@dataclass(frozen=True)
class ProtocolRecord:
    """One line of the JSON progress protocol: a progress report, or the final list of outputs."""

    done: bool
    fraction: float
    message: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


def progress_line(fraction: float, message: str) -> str:
    """The protocol line of a progress report."""
    return json.dumps({"progress": round(fraction, 4), "message": message})


def done_line(outputs: dict[str, str]) -> str:
    """The protocol line that ends a successful run and lists its output files."""
    return json.dumps({"done": True, "outputs": outputs})


def parse_protocol_line(line: str) -> ProtocolRecord | None:
    """Read one line of the protocol; None for anything else (a log line)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("done"):
        outputs = data.get("outputs") if isinstance(data.get("outputs"), dict) else {}
        return ProtocolRecord(True, 1.0, str(data.get("message", "")), outputs)
    if "progress" in data:
        try:
            fraction = min(max(float(data["progress"]), 0.0), 1.0)
        except (TypeError, ValueError):
            return None
        return ProtocolRecord(False, fraction, str(data.get("message", "")))
    return None


class TextProgress:
    """Progress for a person: one status line redrawn in place in a terminal, plain timestamped lines elsewhere.

    In a terminal the line shows a bar, the percentage, the seconds since the start and the step's own words
    ("searching (6 vertebrae so far)"); it is cleared at the end. Written to a file or a pipe, each new step
    is one line ``HH:MM:SS  42 %  message`` (a repeated message is not written again) and there are no
    carriage returns. :meth:`line` prints a message of its own (a warning, the closing summary) on its own
    line in both cases.

    Args:
        stream: where to write (stderr for the command line).
        terminal: whether ``stream`` is a terminal; default: ``stream.isatty()``.
    """

    BAR_WIDTH = 20

    def __init__(self, stream: TextIO, terminal: bool | None = None) -> None:
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self.started = time.monotonic()
        self._status = ""
        self._last_message: str | None = None

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.terminal:
            filled = int(round(self.BAR_WIDTH * fraction))
            seconds = time.monotonic() - self.started
            status = f"[{'#' * filled}{'.' * (self.BAR_WIDTH - filled)}] {100 * fraction:3.0f} % {seconds:4.0f} s  {message}"
            self._draw(status[: shutil.get_terminal_size().columns - 1])  # a wrapped line cannot be redrawn
        elif message != self._last_message:
            self._write(f"{time.strftime('%H:%M:%S')} {100 * fraction:3.0f} %  {message}\n")
        self._last_message = message

    def line(self, text: str) -> None:
        """Print ``text`` on a line of its own (timestamped outside a terminal); the status line comes back."""
        if self.terminal:
            status = self._status
            self._draw("")
            self._write(text + "\n")
            self._draw(status)
        else:
            self._write(f"{time.strftime('%H:%M:%S')} {text}\n")

    def close(self) -> None:
        """Clear the status line (terminal)."""
        if self.terminal:
            self._draw("")

    def _draw(self, status: str) -> None:
        width = max(len(self._status), len(status))
        self._write("\r" + status.ljust(width) + ("\r" if not status else ""))
        self._status = status

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
