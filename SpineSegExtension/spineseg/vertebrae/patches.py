"""Cube patches cut from (and pasted into) a volume, with padding outside it.

Shared by training and inference so both see patches the same way. A patch
is described by its corner (the volume index of its first voxel), which may
lie outside the volume; voxels outside are filled with a pad value.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HU_MIN", "HU_MAX", "OUTSIDE_VALUE", "normalise_ct", "patch_corner", "extract_patch", "overlap_slices"]

HU_MIN, HU_MAX = -1000.0, 3096.0
# Normalised value outside the scan (the paper pads with -2000 HU): distinct from air.
OUTSIDE_VALUE = -2.0


def normalise_ct(hounsfield: np.ndarray) -> np.ndarray:
    """Clip to [-1000, 3096] HU and scale by 1/1000, as float32."""
    return (np.clip(hounsfield, HU_MIN, HU_MAX) / 1000.0).astype(np.float32)


def patch_corner(centre: np.ndarray, size: int) -> np.ndarray:
    """Integer corner of a ``size``-cube patch centred (as near as possible) on ``centre``."""
    return np.round(np.asarray(centre, dtype=float) - size / 2).astype(int)


def overlap_slices(
    corner: np.ndarray, size: int, shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Slices of the volume and of the patch where they overlap, or None if they don't."""
    volume_slices, patch_slices = [], []
    for start, extent in zip(corner, shape):
        low, high = max(int(start), 0), min(int(start) + size, extent)
        if high <= low:
            return None
        volume_slices.append(slice(low, high))
        patch_slices.append(slice(low - int(start), high - int(start)))
    return tuple(volume_slices), tuple(patch_slices)


def extract_patch(volume: np.ndarray, corner: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """Copy a ``size``-cube starting at ``corner`` out of ``volume``, filling outside with ``fill``."""
    patch = np.full((size, size, size), fill, dtype=volume.dtype)
    overlap = overlap_slices(corner, size, volume.shape)
    if overlap is not None:
        patch[overlap[1]] = volume[overlap[0]]
    return patch
