"""The consistent naming of a run of vertebrae from their regressed anatomical positions.

The network regresses each vertebra's anatomical *position* (C1 = 1 ...
L5 = 24, sacrum = 25, see :mod:`spineseg.anatomy`) rather than its VerSe
number, because positions of consecutive vertebrae differ by exactly one.
Naming then picks the one consecutive sequence that the whole run supports
best, so a single poor estimate cannot break the order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..anatomy import STANDARD_LEVELS, position_to_level

__all__ = ["MAX_SACRUM_PIECES", "count_missed_vertebrae", "assign_levels"]

# The sacrum is taller than a model patch (120 mm at the bundled size), so the walk may find it
# as up to this many pieces; naming may give all of them the sacrum's name.
MAX_SACRUM_PIECES = 3

# The position head's error model: Laplace with this scale (positions), which is what its L1 loss fits,
# mixed with this chance of being simply wrong (a fragment, an odd vertebra), so that one wild
# estimate costs a naming a bounded amount instead of outvoting the rest.
POSITION_ERROR_SCALE = 1.0
OUTLIER_PROBABILITY = 0.05

# A step between found vertebrae this many times the typical step around it has a vertebra missing in it:
# one missed vertebra doubles the step; heights change by at most about a third between neighbours.
MISSED_STEP_RATIO = 1.6


def count_missed_vertebrae(heights_mm: Sequence[float]) -> list[int]:
    """How many vertebrae the walk missed before each found one, from the head-foot height of their centroids.

    A step between two found vertebrae of about ``k + 1`` times the typical step holds ``k`` missed
    vertebrae once it exceeds ``MISSED_STEP_RATIO`` times it. The typical step is the larger of the medians
    of up to two steps above and two below, so the short steps between pieces of one split sacrum do not
    make a normal step look long. Runs of fewer than three steps give no evidence and no misses.

    Args:
        heights_mm: centroid heights head to foot (decreasing along the spine).

    Returns:
        Missed vertebrae before each piece (the first is always 0).
    """
    steps = np.abs(np.diff(np.asarray(heights_mm, dtype=float)))
    missed = [0] * len(heights_mm)
    if len(steps) < 3:
        return missed
    for index, step in enumerate(steps):
        typical = max(float(np.median(side)) for side in (steps[max(index - 2, 0):index], steps[index + 1:index + 3])
                      if len(side))
        if typical > 0 and step > MISSED_STEP_RATIO * typical:
            missed[index + 1] = int(round(step / typical)) - 1  # at least 1: the ratio is over 1.6
    return missed


def _candidate_sequences(count: int, missed: Sequence[int]) -> list[np.ndarray]:
    """Every naming of ``count`` head-to-foot pieces: consecutive positions except for ``missed``
    vertebrae, the foot end possibly repeating the sacrum (a sacrum found in pieces)."""
    sacrum = len(STANDARD_LEVELS)
    candidates = []
    for start in range(1, sacrum + 1):
        positions = np.minimum(start + np.arange(count) + np.cumsum(missed), sacrum)
        if (positions == sacrum).sum() <= MAX_SACRUM_PIECES:
            candidates.append(positions)
    return candidates


def _log_likelihoods(regressed: np.ndarray) -> np.ndarray:
    """Per vertebra (rows) and position 1..25 (columns): log-likelihood of the regressed value."""
    positions = np.arange(1, len(STANDARD_LEVELS) + 1)
    laplace = np.exp(-np.abs(regressed[:, None] - positions[None, :]) / POSITION_ERROR_SCALE)
    laplace /= laplace.sum(axis=1, keepdims=True)
    return np.log((1.0 - OUTLIER_PROBABILITY) * laplace + OUTLIER_PROBABILITY / len(STANDARD_LEVELS))


def assign_levels(
    regressed: Sequence[float], complete: Sequence[bool] | None = None, missed: Sequence[int] | None = None
) -> list[int]:
    """Name a head-to-foot run of vertebrae with the most likely consecutive sequence of levels.

    The likelihood of a naming is the product over the pieces of how well each
    regressed position fits the position the naming gives it (Laplace errors,
    see ``POSITION_ERROR_SCALE``, with a small outlier chance). The foot end may
    repeat the sacrum: a sacrum found in pieces is named once, not as "L5"
    and "sacrum". As in the paper, only complete vertebrae vote (all of them
    if none is complete); the others are named by the sequence.

    Args:
        regressed: the position head's output per vertebra, in traversal order (head first).
        complete: which vertebrae are complete in their patch.
        missed: vertebrae missed by the walk before each one (see ``count_missed_vertebrae``): the sequence skips them,
            unless the run is too long for that.

    Returns:
        VerSe numbers, one per vertebra; up to ``MAX_SACRUM_PIECES`` foot-end pieces may all be 26.

    Raises:
        ValueError: more pieces than the spine has levels and sacrum pieces.
    """
    count = len(regressed)
    if count == 0:
        return []
    # Misses are a step-length guess; a run too long to hold them all is named without them.
    candidates = _candidate_sequences(count, missed) if missed is not None else []
    candidates = candidates or _candidate_sequences(count, [0] * count)
    if not candidates:
        raise ValueError(f"cannot name {count} vertebrae: the sequence has only {len(STANDARD_LEVELS)} levels")
    votes = np.ones(count, dtype=bool) if complete is None else np.asarray(complete, dtype=bool)
    if not votes.any():
        votes[:] = True
    scores = _log_likelihoods(np.asarray(regressed, dtype=float))
    rows = np.flatnonzero(votes)
    likelihoods = [scores[rows, positions[rows] - 1].sum() for positions in candidates]
    best = candidates[int(np.argmax(likelihoods))]
    return [position_to_level(int(p)) for p in best]
