"""The consistent naming of a run of vertebrae from their regressed anatomical positions.

The network regresses each vertebra's anatomical *position* (C1 = 1 ...
L5 = 24, sacrum = 25, see :mod:`spineseg.anatomy`) rather than its VerSe
number, because positions of consecutive vertebrae differ by exactly one.
Naming then picks the one consecutive sequence that the whole run supports
best, so a single poor estimate cannot break the order.

Anatomical anchors (:mod:`.anchors`: the sacrum, C2, the last rib, C7/T1)
overrule the regressed positions: a sequence that agrees with more trusted
anchors always wins, so an anchor in view fixes any offset, and the positions
decide only among the sequences the anchors allow. The variants T13 and L6 are
named only when the anchors demand an extra vertebra (13 rib-bearing
vertebrae, or 6 without ribs between the last rib and the sacrum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..anatomy import HEAD_TO_FOOT, L6, SACRUM, STANDARD_LEVELS, T13, level_to_position
from .anchors import Anchor

__all__ = ["MAX_SACRUM_PIECES", "ANCHOR_TRUST", "count_missed_vertebrae", "Naming", "name_run", "assign_levels"]

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


# The level sequences a spine can have: the standard one and the two variants with an extra vertebra.
SEQUENCES: dict[int | None, list[int]] = {
    None: STANDARD_LEVELS,
    T13: [level for level in HEAD_TO_FOOT if level != L6],
    L6: [level for level in HEAD_TO_FOOT if level != T13],
}
# Where the regression would put a variant vertebra: between its neighbours' positions.
_VARIANT_POSITION = {T13: level_to_position(19) + 0.5, L6: level_to_position(24) + 0.5}
# How much each anchor counts when anchors disagree: each outweighs all less trusted ones together, so the
# sacrum overrules the ribs, and the ribs are only followed where they agree with it (or with a variant).
ANCHOR_TRUST: dict[Anchor, int] = {Anchor.SACRUM: 8, Anchor.C2: 4, Anchor.LAST_RIB: 2, Anchor.FIRST_RIB: 1}
# A rib anchor moves the names at most this many levels from the network's own naming. The ilium beside
# L5 and the sacrum, where the sacrum itself is not recognised, reads as ribs below rib-free lumbar
# vertebrae, a false "C7/T1" about fifteen levels away; the network is off by two or three at worst.
MAX_RIB_ANCHOR_SHIFT = 4.0
RIB_ANCHORS = (Anchor.LAST_RIB, Anchor.FIRST_RIB)


def _expected_position(level: int) -> float:
    """The position the network is trained to regress for a level (variants: between their neighbours)."""
    return _VARIANT_POSITION[level] if level in _VARIANT_POSITION else float(level_to_position(level))


def _candidate_sequences(count: int, missed: Sequence[int], sequence: list[int]) -> list[list[int]]:
    """Every naming of ``count`` head-to-foot pieces along ``sequence``: consecutive levels except for ``missed``
    vertebrae, the foot end possibly repeating the sacrum (a sacrum found in pieces)."""
    last = len(sequence) - 1
    candidates = []
    for start in range(len(sequence)):
        indices = np.minimum(start + np.arange(count) + np.cumsum(missed), last)
        if (indices == last).sum() <= MAX_SACRUM_PIECES:
            candidates.append([sequence[i] for i in indices])
    return candidates


def _log_likelihoods(regressed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Log-likelihood of each regressed position given the position a naming expects there."""
    positions = np.arange(1, len(STANDARD_LEVELS) + 1)
    normaliser = np.exp(-np.abs(regressed[:, None] - positions[None, :]) / POSITION_ERROR_SCALE).sum(axis=1)
    laplace = np.exp(-np.abs(regressed - expected) / POSITION_ERROR_SCALE) / normaliser
    return np.log((1.0 - OUTLIER_PROBABILITY) * laplace + OUTLIER_PROBABILITY / len(STANDARD_LEVELS))


def _agrees(anchor: Anchor, index: int, levels: list[int], variant: int | None) -> bool:
    """Whether a naming gives the piece at ``index`` the level ``anchor`` says it has."""
    level = levels[index]
    if anchor is Anchor.SACRUM:
        return level == SACRUM and (index == 0 or levels[index - 1] != SACRUM)
    if anchor is Anchor.C2:
        return level == 2
    if anchor is Anchor.LAST_RIB:
        return level == (T13 if variant == T13 else 19)
    return level == 8  # C7/T1: the first rib-bearing vertebra is T1


@dataclass(frozen=True)
class Naming:
    """The levels of a run and what fixed them.

    Attributes:
        levels: VerSe numbers head to foot, one per piece (a sacrum in pieces repeats 26).
        anchor: the most trusted anchor the naming follows; None when no anchor fixed it (unanchored).
        found: every anchor seen and the index of the piece it marks.
        followed: the anchors the naming agrees with (the others disagreed with a more trusted one).
        variant: T13 or L6 when the anchors demanded the extra vertebra, else None.
        renamed: how many pieces got another name than the regressed positions alone would give them.
        plain: the levels the regressed positions alone give the pieces.
    """

    levels: list[int]
    anchor: Anchor | None = None
    found: dict[Anchor, int] = field(default_factory=dict)
    followed: list[Anchor] = field(default_factory=list)
    variant: int | None = None
    renamed: int = 0
    plain: list[int] = field(default_factory=list)

    @property
    def anchored(self) -> bool:
        return self.anchor is not None


def name_run(
    regressed: Sequence[float], complete: Sequence[bool] | None = None, missed: Sequence[int] | None = None,
    anchors: dict[Anchor, int] | None = None,
) -> Naming:
    """Name a head-to-foot run of vertebrae: the consecutive sequence that agrees with the most trusted
    anatomical anchors and, among those, fits the regressed positions best.

    The fit of a naming is the product over the pieces of how well each regressed position fits the position
    the naming gives it (Laplace errors, see ``POSITION_ERROR_SCALE``, with a small outlier chance). The foot
    end may repeat the sacrum: a sacrum found in pieces is named once, not as "L5" and "sacrum". As in the
    paper, only complete vertebrae vote (all of them if none is complete); the others are named by the
    sequence. Anchors come first (see ``ANCHOR_TRUST``); the T13 and L6 variants only where they let the naming
    follow more anchors than the standard sequence can. A rib anchor is followed only by namings within
    ``MAX_RIB_ANCHOR_SHIFT`` levels of the network's own.

    Args:
        regressed: the position head's output per vertebra, in traversal order (head first).
        complete: which vertebrae are complete in their patch.
        missed: vertebrae missed by the walk before each one (see ``count_missed_vertebrae``): the sequence skips
            them, unless the run is too long for that.
        anchors: anchors found and the index of the piece each one marks (see :mod:`.anchors`).

    Raises:
        ValueError: more pieces than the spine has levels and sacrum pieces, or an anchor on no piece.
    """
    count = len(regressed)
    anchors = dict(anchors or {})
    if any(not 0 <= index < count for index in anchors.values()):
        raise ValueError(f"anchors must mark pieces 0..{count - 1}, got {anchors}")
    if count == 0:
        return Naming([])
    votes = np.ones(count, dtype=bool) if complete is None else np.asarray(complete, dtype=bool)
    if not votes.any():
        votes[:] = True
    rows = np.flatnonzero(votes)
    values = np.asarray(regressed, dtype=float)[rows]
    if not _candidate_sequences(count, [0] * count, STANDARD_LEVELS):
        raise ValueError(f"cannot name {count} vertebrae: the sequence has only {len(STANDARD_LEVELS)} levels")
    fitted = []
    for variant, sequence in SEQUENCES.items() if anchors else [(None, STANDARD_LEVELS)]:
        # Misses are a step-length guess; a run too long to hold them all is named without them.
        candidates = _candidate_sequences(count, missed, sequence) if missed is not None else []
        for levels in candidates or _candidate_sequences(count, [0] * count, sequence):
            expected = np.array([_expected_position(levels[row]) for row in rows])
            fitted.append((float(_log_likelihoods(values, expected).sum()), levels, variant))
    plain = max((item for item in fitted if item[2] is None), key=lambda item: item[0])[1]

    def believable(anchor: Anchor, levels: list[int]) -> bool:
        shift = abs(_expected_position(levels[0]) - _expected_position(plain[0]))
        return anchor not in RIB_ANCHORS or shift <= MAX_RIB_ANCHOR_SHIFT

    scored = []
    for fit, levels, variant in fitted:
        followed = [a for a, index in anchors.items() if _agrees(a, index, levels, variant) and believable(a, levels)]
        trust = sum(ANCHOR_TRUST[a] for a in followed)
        scored.append(((trust, variant is None, fit), levels, variant, followed))
    _, levels, variant, followed = max(scored, key=lambda item: item[0])
    followed = sorted(followed, key=lambda a: -ANCHOR_TRUST[a])
    return Naming(
        levels=levels, anchor=followed[0] if followed else None, found=anchors, followed=followed,
        variant=variant if followed else None, renamed=sum(a != b for a, b in zip(levels, plain)), plain=plain,
    )


def assign_levels(
    regressed: Sequence[float], complete: Sequence[bool] | None = None, missed: Sequence[int] | None = None
) -> list[int]:
    """The levels :func:`name_run` gives a run from its regressed positions alone (no anchors)."""
    return name_run(regressed, complete, missed).levels
