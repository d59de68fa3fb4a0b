"""Anatomical positions and the consistent naming of a run of vertebrae.

The network regresses an anatomical *position* (C1 = 1 ... L5 = 24,
sacrum = 25) rather than the VerSe number, because positions of consecutive
vertebrae differ by exactly one. Naming then fits one consecutive sequence to
all regressed positions at once, so a single poor estimate cannot break the
order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..labels import SACRUM

__all__ = ["POSITIONS", "level_to_position", "position_to_level", "assign_levels"]

# Position n (1-based) -> VerSe number: C1..L5, then the sacrum.
POSITIONS: list[int] = list(range(1, 25)) + [SACRUM]


def level_to_position(level: int) -> int:
    """VerSe number -> anatomical position (1..25). L6 and T13 are not modelled."""
    if level not in POSITIONS:
        raise ValueError(f"VerSe number {level} has no anatomical position in the C1..L5, sacrum sequence")
    return POSITIONS.index(level) + 1


def position_to_level(position: int) -> int:
    """Anatomical position (1..25) -> VerSe number."""
    if not 1 <= position <= len(POSITIONS):
        raise ValueError(f"position must be 1..{len(POSITIONS)}, got {position}")
    return POSITIONS[position - 1]


def assign_levels(
    regressed: Sequence[float], complete: Sequence[bool] | None = None
) -> list[int]:
    """Name a head-to-foot run of vertebrae with one consecutive sequence of levels.

    Chooses the first position ``p`` that minimises the summed absolute error
    ``sum |regressed[i] - (p + i)|`` over complete vertebrae (all of them if
    none is complete), with every position kept in 1..25.

    Args:
        regressed: the level head's output per vertebra, in traversal order.
        complete: which vertebrae are complete; incomplete ones are named by
            the sequence but do not vote.

    Returns:
        VerSe numbers, one per vertebra.
    """
    count = len(regressed)
    if count == 0:
        return []
    if count > len(POSITIONS):
        raise ValueError(f"cannot name {count} vertebrae: the sequence has only {len(POSITIONS)} levels")
    values = np.asarray(regressed, dtype=float)
    votes = np.ones(count, dtype=bool) if complete is None else np.asarray(complete, dtype=bool)
    if not votes.any():
        votes[:] = True
    offsets = np.arange(count)
    candidates = np.arange(1, len(POSITIONS) - count + 2)
    errors = [np.abs(values[votes] - (start + offsets[votes])).sum() for start in candidates]
    start = int(candidates[int(np.argmin(errors))])
    return [position_to_level(start + i) for i in range(count)]
