"""The ``spineseg`` console script: answers Ctrl-C during start-up before the heavy imports.

Importing the command (numpy, SimpleITK, tqdm, the trainer) takes a noticeable
time; a Ctrl-C or SIGTERM in that time would otherwise print a traceback.
Nothing is written before the command runs, so a stop during start-up exits at
once with 130 and one line. :func:`spineseg.cli.main` takes the signals over
once it runs (and cleans up after itself from then on).

This module imports only ``os``, ``signal``, ``sys`` and :mod:`spineseg.exits`, so the handlers are in
place within milliseconds of Python starting.
"""

from __future__ import annotations

import os
import signal
import sys

from .exits import EXIT_INTERRUPTED, NOTHING_WRITTEN

__all__ = ["main", "install_startup_handlers"]


def _exit_during_startup(signum: int, frame: object) -> None:
    """Leave at once: nothing has been written yet, and raising here could land in an import."""
    os.write(sys.stderr.fileno(), (NOTHING_WRITTEN + "\n").encode())
    os._exit(EXIT_INTERRUPTED)


def install_startup_handlers() -> None:
    """Make SIGINT and SIGTERM end the process with 130 and one line until the command installs its own."""
    signal.signal(signal.SIGINT, _exit_during_startup)
    signal.signal(signal.SIGTERM, _exit_during_startup)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spineseg`` console script; returns the exit code of :func:`spineseg.cli.main`."""
    install_startup_handlers()
    from .cli import main as cli_main

    code = cli_main(argv)
    # The command has finished and said how: a stop during Python's shutdown must not change its exit code.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
