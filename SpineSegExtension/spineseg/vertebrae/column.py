"""Which found pieces line up as one spinal column: the link rule shared by the walk and its clean-up.

Centroids are in mm on the working grid, whose axes are R, A, S. Two pieces
are linked when they are at most ``MAX_GAP_MM`` apart head to foot (room for
one missed vertebra), at most ``MAX_OFFSET_MM`` apart left to right, and front
to back at most ``MAX_OFFSET_MM`` apart or within ``MAX_SAGITTAL_TILT_DEG`` of
the head-foot axis: the sacrum's centroid lies 30-45 mm behind L5's, down the
lumbosacral curve, while stray bone (ribs, iliac wings, calcified vessels)
lies beside or in front of the spine at about the same height.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import connected_components

__all__ = ["MAX_OFFSET_MM", "MAX_GAP_MM", "MAX_SAGITTAL_TILT_DEG", "links", "column_members"]

MAX_OFFSET_MM = 25.0
MAX_GAP_MM = 80.0
MAX_SAGITTAL_TILT_DEG = 55.0


def links(
    a_mm: np.ndarray, b_mm: np.ndarray, max_offset_mm: float = MAX_OFFSET_MM, max_gap_mm: float = MAX_GAP_MM,
    max_sagittal_tilt_deg: float = MAX_SAGITTAL_TILT_DEG,
) -> np.ndarray:
    """Boolean (len(a), len(b)) matrix: which centroids of ``a_mm`` (N x 3, mm, axes R, A, S) link to which of
    ``b_mm`` by the rule of this module."""
    offsets = np.abs(np.asarray(a_mm, float)[:, None, :] - np.asarray(b_mm, float)[None, :, :])
    lateral, front_back, vertical = offsets[..., 0], offsets[..., 1], offsets[..., 2]
    sagittal_limit = np.maximum(max_offset_mm, vertical * np.tan(np.deg2rad(max_sagittal_tilt_deg)))
    return (lateral <= max_offset_mm) & (front_back <= sagittal_limit) & (vertical <= max_gap_mm)


def column_members(centres_mm: np.ndarray, weights: np.ndarray | None = None, **rule: float) -> np.ndarray:
    """Indices of the largest linked group of centroids (ties: the largest total ``weights``), in input order.

    ``rule`` passes ``max_offset_mm``, ``max_gap_mm`` or ``max_sagittal_tilt_deg`` on to :func:`links`.
    """
    centres_mm = np.asarray(centres_mm, float).reshape(-1, 3)
    if len(centres_mm) < 2:
        return np.arange(len(centres_mm))
    _, group = connected_components(links(centres_mm, centres_mm, **rule))
    sizes = np.bincount(group)
    totals = np.bincount(group, weights=np.ones(len(group)) if weights is None else weights)
    best = max(range(len(sizes)), key=lambda g: (sizes[g], totals[g]))
    return np.flatnonzero(group == best)
