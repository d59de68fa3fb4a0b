"""Time and peak resident memory per stage of a run, told apart by its progress messages.

Used by ``benchmark.py``: pass a :class:`StageMeter` as the ``progress`` callback
of a job or of ``segment_vertebrae``; each message starts the stage it names
(see ``STAGES``). Memory is the process's resident set, sampled every few
milliseconds by a thread and checked against the kernel's high-water mark at
every stage change, so a short peak inside one C call is still counted.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass

__all__ = ["STAGES", "StageFigures", "StageMeter", "resident_mb", "peak_resident_mb"]

# Stage names in run order, and the start of the progress messages that open them.
STAGES = {
    "model": ("loading the model",),
    "resample": ("resampling",),
    "walk": ("searching", "found vertebra"),
    "paint": ("painting",),
    "bone refinement": ("refining",),
    "marrow filling": ("filling",),
    "write": ("writing", "wrote"),
}
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def resident_mb() -> float:
    """The process's resident memory now (MB)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_MB


def peak_resident_mb() -> float:
    """The process's highest resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class StageFigures:
    seconds: float = 0.0
    peak_mb: float = 0.0


class StageMeter:
    """A progress callback that adds up each stage's time and keeps its peak resident memory.

    The first stage, before any message, is ``first``: reading the input (in a job) and checking it.
    """

    def __init__(self, first: str = "read, check", interval_s: float = 0.002) -> None:
        self.stages: dict[str, StageFigures] = {}
        self._stage = first
        self._started = time.perf_counter()
        self._high_water = peak_resident_mb()
        self._sampled = resident_mb()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval_s,), daemon=True)
        self._thread.start()

    def _sample(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            now = resident_mb()
            with self._lock:
                self._sampled = max(self._sampled, now)

    def _close_stage(self) -> None:
        figures = self.stages.setdefault(self._stage, StageFigures())
        now = time.perf_counter()
        figures.seconds += now - self._started
        high_water = peak_resident_mb()
        with self._lock:
            peak = self._sampled
            self._sampled = resident_mb()
        if high_water > self._high_water:  # the process's peak so far was reached in this stage
            peak = max(peak, high_water)
        figures.peak_mb = max(figures.peak_mb, peak)
        self._started, self._high_water = now, high_water

    def __call__(self, fraction: float, message: str) -> None:
        stage = next((name for name, starts in STAGES.items() if message.startswith(starts)), self._stage)
        if stage != self._stage:
            self._close_stage()
            self._stage = stage

    def finish(self) -> dict[str, StageFigures]:
        """Close the last stage, stop sampling and return the figures in run order."""
        self._close_stage()
        self._stop.set()
        self._thread.join()
        return self.stages
