"""The exit codes every SpineSeg command promises (README), and the line an early stop prints.

Imports nothing, so the console script (:mod:`spineseg.entry`) can use it before the heavy imports.
"""

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_INPUT", "EXIT_MODEL", "EXIT_INTERRUPTED", "NOTHING_WRITTEN"]

# 2 bad input, 3 model problem, 130 interrupted.
EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

NOTHING_WRITTEN = "spineseg: interrupted; no output was written"
