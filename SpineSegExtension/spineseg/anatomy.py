"""The spine's levels in head-to-foot order, their anatomical positions and typical sizes.

Vertebrae carry VerSe numbers (1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 25 L6,
26 sacrum, 28 T13). ``HEAD_TO_FOOT`` is the one order of all of them;
``STANDARD_LEVELS`` is that order without the T13 and L6 variants. A level's
*position* counts along the standard levels (C1 = 1 ... L5 = 24, sacrum = 25):
positions of neighbours differ by exactly one, which is why the vertebra
network regresses positions rather than VerSe numbers. Sizes are typical
adult dimensions; the disc decoder's spacing prior and the phantoms use them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SACRUM", "T13", "L6", "HEAD_TO_FOOT", "STANDARD_LEVELS", "level_to_position", "position_to_level",
    "check_consecutive", "LevelSize", "DIMENSIONS", "level_size", "most_vertebrae_in",
]

SACRUM = 26
T13 = 28  # an extra thoracic vertebra, between T12 and L1
L6 = 25  # an extra lumbar vertebra, between L5 and the sacrum

# Every VerSe number, head to foot.
HEAD_TO_FOOT: list[int] = [*range(1, 20), T13, *range(20, 25), L6, SACRUM]

# C1..L5 and the sacrum: the spine without variants, which positions count along.
STANDARD_LEVELS: list[int] = [level for level in HEAD_TO_FOOT if level not in (T13, L6)]


def level_to_position(level: int) -> int:
    """VerSe number -> anatomical position (1..25). L6 and T13 have none."""
    if level not in STANDARD_LEVELS:
        raise ValueError(f"VerSe number {level} has no anatomical position in the C1..L5, sacrum sequence")
    return STANDARD_LEVELS.index(level) + 1


def position_to_level(position: int) -> int:
    """Anatomical position (1..25) -> VerSe number."""
    if not 1 <= position <= len(STANDARD_LEVELS):
        raise ValueError(f"position must be 1..{len(STANDARD_LEVELS)}, got {position}")
    return STANDARD_LEVELS[position - 1]


def check_consecutive(levels: list[int]) -> None:
    """Raise ValueError unless ``levels`` are one or more consecutive head-to-foot entries of ``STANDARD_LEVELS``."""
    if not levels:
        raise ValueError("levels must name at least one vertebra")
    if any(level not in STANDARD_LEVELS for level in levels):
        raise ValueError(f"levels must be VerSe numbers from {STANDARD_LEVELS}, got {levels}")
    first = level_to_position(levels[0])
    if [level_to_position(level) for level in levels] != list(range(first, first + len(levels))):
        raise ValueError(f"levels must be consecutive head-to-foot entries of {STANDARD_LEVELS}, got {levels}")


@dataclass(frozen=True)
class LevelSize:
    """Typical adult dimensions of one vertebra in mm.

    body_height is along the spine, body_width left-right, body_depth
    front-back. disc_below is the height of the disc under this vertebra.
    """

    body_height: float
    body_width: float
    body_depth: float
    disc_below: float
    canal_width: float
    canal_depth: float
    pedicle_length: float
    spinous_length: float
    spinous_drop: float
    transverse_span: float
    has_ribs: bool


# Key levels (VerSe numbers) and their sizes; levels in between are interpolated.
_KEY_LEVELS = np.array([1, 3, 7, 8, 13, 19, 20, 24])
_KEY_SIZES = {
    #                      C1    C3    C7    T1    T6    T12   L1    L5
    "body_height": [10.0, 14.0, 14.5, 17.0, 20.0, 24.0, 26.0, 27.0],
    "body_width": [16.0, 17.0, 22.0, 25.0, 29.0, 38.0, 42.0, 50.0],
    "body_depth": [14.0, 15.0, 16.0, 17.0, 24.0, 30.0, 32.0, 34.0],
    "disc_below": [4.0, 5.0, 5.5, 4.5, 5.5, 7.0, 9.0, 11.0],
    "canal_width": [26.0, 24.0, 23.0, 20.0, 17.0, 19.0, 21.0, 24.0],
    "canal_depth": [18.0, 15.0, 14.0, 14.0, 15.0, 16.0, 17.0, 17.0],
    "pedicle_length": [6.0, 6.0, 7.0, 9.0, 10.0, 11.0, 12.0, 12.0],
    "spinous_length": [10.0, 12.0, 22.0, 28.0, 32.0, 28.0, 28.0, 24.0],
    "spinous_drop": [0.0, 3.0, 6.0, 10.0, 22.0, 10.0, 5.0, 4.0],
    "transverse_span": [70.0, 48.0, 62.0, 70.0, 64.0, 56.0, 64.0, 78.0],
}

# The measured fields of ``LevelSize``, in its field order.
DIMENSIONS: tuple[str, ...] = tuple(_KEY_SIZES)


def level_size(level: int) -> LevelSize:
    """Typical dimensions of a vertebra, by VerSe number (sacrum: its top, S1)."""
    if level == SACRUM:
        return LevelSize(30.0, 50.0, 32.0, 0.0, 24.0, 14.0, 10.0, 14.0, 0.0, 100.0, False)
    if not 1 <= level <= 24:
        raise ValueError(f"typical sizes are known for levels 1-24 and {SACRUM} (sacrum), got {level}")
    values = {name: float(np.interp(level, _KEY_LEVELS, keys)) for name, keys in _KEY_SIZES.items()}
    return LevelSize(**values, has_ribs=8 <= level <= 19)


def most_vertebrae_in(extent_mm: float) -> int:
    """The most vertebrae a head-foot extent can show: the longest run of consecutive standard levels whose
    heights (body plus the disc below) fit in it, plus one vertebra cut by each end of the extent.

    With the smallest levels (the upper cervical spine) this bounds any scan, whatever part of the spine it
    shows: 14 mm holds at most 3 (C1, cut neighbours above and below), 336 mm (a 3 mm scan of 112 slices) 17.
    """
    if extent_mm < 0:
        raise ValueError(f"extent_mm must not be negative, got {extent_mm}")
    pitches = [level_size(level).body_height + level_size(level).disc_below for level in STANDARD_LEVELS]
    most = 0
    for first in range(len(pitches)):
        total, count = 0.0, 0
        for pitch in pitches[first:]:
            if total + pitch > extent_mm:
                break
            total, count = total + pitch, count + 1
        most = max(most, count)
    return most + 2
