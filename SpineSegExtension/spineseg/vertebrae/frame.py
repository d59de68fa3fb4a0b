"""The spine's frame, read from the CT's physics before any network runs: the spinal canal's centre line.

In each axial slice of a 2 mm copy of the CT, the canal is soft tissue or
fluid that bone surrounds on (nearly) every side within a short reach, with
the vertebral body in front of it and near the body's left-right middle. Its
ring of bone is open at the foramina and between the laminae, and on coarse
scans partial volume opens it further, so enclosure is judged along eight
rays rather than by filling holes. A slice may hold several such regions
(a body's own dark marrow, a hip joint, the heart between contrast-filled
chambers); the canal is the longest chain of them that moves little from
slice to slice (dynamic programming over the candidates), and the chain may
skip slices where the ring is open (disc levels).

The line is reported in ``vertebrae.json`` and drawn in the picture, and the
bone division (:mod:`.bone_division`) keeps the canal out of the bone where
an arch closes its ring around it. Coordinates are RAS millimetres, so the
line is the same whatever the scan's voxel size or orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..geometry import Grid, resample_to, working_grid
from ..volume import Volume, VolumeKind

__all__ = ["FRAME_SPACING_MM", "SpineFrame", "find_spine_frame", "bone_hu_on"]

# The frame is read on an isotropic grid this fine (area-averaged from finer scans).
FRAME_SPACING_MM = 2.0
# Bone: cortical and dense cancellous bone, and contrast-filled vessels (which the chain rules sort out).
FRAME_BONE_HU = 180.0
# Slices where that bone shows no canal are read again at this lower bone threshold: thin cortex on a coarse
# grid (a 3 mm scan of an osteoporotic spine) leaves the body's wall open, and the canal merges with the dark
# marrow in front of it.
FRAME_DIM_BONE_HU = 150.0
# The canal: soft tissue with bone within this distance in at least this many of eight directions.
ENCLOSURE_MM = 16.0
ENCLOSING_DIRECTIONS = 6
# The canal lies within this distance of the middle (left to right) of the body's outline (above this HU).
MAX_MIDLINE_OFFSET_MM = 50.0
BODY_OUTLINE_HU = -300.0
# Holes in an axial slice's bone at least this large are a body's marrow, not the canal.
MARROW_HOLE_MM2 = 350.0
# The share of bone in the window in front of a canal candidate (the vertebral body).
MIN_BODY_SHARE = 0.15
# A canal's cross-section (adult canals: 1.0-3.5 cm^2; a generous range for cut and tilted slices).
CANAL_AREA_MM2 = (30.0, 700.0)
# Soft tissue, fluid and the cord: the canal's median Hounsfield units.
CANAL_HU = (-80.0, 120.0)
# A body lies in front of the canal, within this distance of the canal's front edge.
BODY_SEARCH_MM = 25.0
BODY_HALF_WIDTH_MM = 12.0
# The canal moves at most this much between neighbouring slices of the chain (mm per mm of height), and the
# chain may skip this many millimetres of slices without a hole (disc levels, where the ring is open).
CANAL_SLOPE = 0.5
CANAL_GAP_MM = 40.0
# The chain's score loses this much per mm the canal moves in plane (a canal is a smooth tube).
SHIFT_COST = 0.15
# A canal shorter than this is not a spine (a hole in a rib cage, a vessel).
MIN_CANAL_MM = 20.0

@dataclass(frozen=True)
class SpineFrame:
    """The spinal canal's centre line: points in RAS mm (n x 3), head to foot, one per 2 mm of height."""

    canal: np.ndarray

    def canal_in(self, affine: np.ndarray) -> np.ndarray:
        """The canal's centre line in the voxel coordinates of a grid with ``affine`` (n x 3, head to foot)."""
        inverse = np.linalg.inv(affine)
        return self.canal @ inverse[:3, :3].T + inverse[:3, 3]

    def canal_voxels(
        self, affine: np.ndarray, shape: tuple[int, ...], box: tuple[slice, ...] | None = None,
    ) -> np.ndarray:
        """The canal's centre line as voxels of a grid (``affine``, ``shape``), or of the ``box`` of it."""
        box = box or tuple(slice(0, n) for n in shape)
        mask = np.zeros(tuple(s.stop - s.start for s in box), bool)
        # Points at least every half voxel along the line, so that the voxels it crosses are all marked.
        step = max(0.25, float(np.min(np.linalg.norm(affine[:3, :3], axis=0))) / 2)
        length = np.linalg.norm(np.diff(self.canal, axis=0), axis=1)
        at = np.concatenate([[0.0], np.cumsum(length)])
        dense = np.stack([np.interp(np.arange(0, at[-1] + step, step), at, self.canal[:, a]) for a in range(3)], 1)
        ijk = np.round(SpineFrame(dense).canal_in(affine)).astype(int)
        ijk -= [s.start for s in box]
        inside = np.all((ijk >= 0) & (ijk < mask.shape), axis=1)
        mask[tuple(ijk[inside].T)] = True
        return mask


def bone_hu_on(volume: Volume, grid: Grid) -> np.ndarray:
    """The CT's Hounsfield units on ``grid`` (area-averaged where the grid is coarser); outside the scan -1000."""
    source = Volume(volume.array, volume.affine, VolumeKind.INTENSITY)
    return resample_to(source, grid, fill_value=-1000.0).array


@dataclass(frozen=True)
class _Hole:
    k: int
    centre: np.ndarray  # (i, j) on the frame grid
    front: float  # the hole's most anterior j
    weight: float


def _enclosure(bone: np.ndarray, reach_voxels: int) -> np.ndarray:
    """For each voxel, in how many of eight in-plane directions bone lies within ``reach_voxels`` (0-8).

    The canal's ring of bone is open in places (foramina, the gaps between laminae, partial volume on coarse
    scans), so a hole-filling test misses it in most slices; looking for bone along rays tolerates gaps."""
    count = np.zeros(bone.shape, np.uint8)
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        steps = reach_voxels if di == 0 or dj == 0 else max(1, int(round(reach_voxels / np.sqrt(2))))
        hit = np.zeros(bone.shape, bool)
        for step in range(1, steps + 1):
            # hit[i, j] |= bone[i + di * step, j + dj * step], nothing beyond the grid's edge
            target, source = [slice(None)] * 3, [slice(None)] * 3
            for axis, delta in ((0, di * step), (1, dj * step)):
                target[axis] = slice(max(-delta, 0), bone.shape[axis] - max(delta, 0))
                source[axis] = slice(max(delta, 0), bone.shape[axis] - max(-delta, 0))
            hit[tuple(target)] |= bone[tuple(source)]
        count += hit
    return count


def _solid_bone(plane: np.ndarray, spacing: float) -> np.ndarray:
    """An axial slice's bone with the marrow of the bodies: holes in the bone larger than a canal are filled
    (dark osteoporotic or fatty marrow reads like the canal's soft tissue)."""
    holes, count = ndimage.label(ndimage.binary_fill_holes(plane) & ~plane)
    if count == 0:
        return plane
    large = np.bincount(holes.ravel()) * spacing**2 >= MARROW_HOLE_MM2
    large[0] = False
    return plane | large[holes]


def _canal_candidates(hu: np.ndarray, spacing: float, bone_hu: float = FRAME_BONE_HU) -> list[_Hole]:
    """Regions in each axial slice that could be the canal: soft tissue that bone surrounds on (nearly) every
    side within ``ENCLOSURE_MM``, with a body's bone in front."""
    bone = hu >= bone_hu
    enclosed = (_enclosure(bone, int(round(ENCLOSURE_MM / spacing))) >= ENCLOSING_DIRECTIONS)
    soft = (hu >= CANAL_HU[0]) & (hu <= CANAL_HU[1])
    area_voxels = [a / spacing**2 for a in CANAL_AREA_MM2]
    reach = int(round(BODY_SEARCH_MM / spacing))
    half_width = int(round(BODY_HALF_WIDTH_MM / spacing))
    middle_reach = MAX_MIDLINE_OFFSET_MM / spacing
    candidates = []
    for k in range(hu.shape[2]):
        body_columns = np.flatnonzero((hu[:, :, k] > BODY_OUTLINE_HU).any(axis=1))
        if len(body_columns) == 0:
            continue
        middle = (body_columns[0] + body_columns[-1]) / 2
        plane = _solid_bone(bone[:, :, k], spacing)
        regions, count = ndimage.label(enclosed[:, :, k] & soft[:, :, k] & ~plane)
        if count == 0:
            continue
        sizes = np.bincount(regions.ravel())
        for index in np.flatnonzero((sizes >= area_voxels[0]) & (sizes <= area_voxels[1])):
            if index == 0:
                continue
            where = np.argwhere(regions == index)
            centre = where.mean(axis=0)
            if abs(centre[0] - middle) > middle_reach:
                continue
            front = float(where[:, 1].max())
            i0, i1 = int(centre[0]) - half_width, int(centre[0]) + half_width + 1
            j0, j1 = int(front) + 1, int(front) + 1 + reach
            window = plane[max(i0, 0):max(i1, 0), max(j0, 0):max(j1, 0)]
            body_share = float(window.mean()) if window.size else 0.0
            if body_share < MIN_BODY_SHARE:
                continue
            candidates.append(_Hole(k, centre, front, body_share))
    return candidates


def _canal_chain(candidates: list[_Hole], spacing: float) -> list[_Hole]:
    """The longest chain of holes, head to foot, that moves little between slices (dynamic programming)."""
    if not candidates:
        return []
    ordered = sorted(candidates, key=lambda h: h.k)
    gap = max(1, int(round(CANAL_GAP_MM / spacing)))
    score = np.array([h.weight for h in ordered])
    back = np.full(len(ordered), -1)
    for n, hole in enumerate(ordered):
        for m in range(n - 1, -1, -1):
            earlier = ordered[m]
            dk = hole.k - earlier.k
            if dk > gap:
                break
            if dk == 0:
                continue
            shift = float(np.linalg.norm(hole.centre - earlier.centre))
            if shift <= CANAL_SLOPE * dk + 2.0:
                total = score[m] + hole.weight * min(dk, 3) - SHIFT_COST * shift * spacing
                if total > score[n]:
                    score[n], back[n] = total, m
    chain = [int(np.argmax(score))]
    while back[chain[-1]] >= 0:
        chain.append(int(back[chain[-1]]))
    return [ordered[n] for n in chain]  # head (high k) first


def _line_through(ks: np.ndarray, points: np.ndarray, every_k: np.ndarray, smoothing: float) -> np.ndarray:
    """``points`` (at slices ``ks``) interpolated onto every slice of ``every_k`` and smoothed along it."""
    line = np.stack([np.interp(every_k, ks, points[:, a]) for a in range(points.shape[1])], axis=1)
    return ndimage.gaussian_filter1d(line, smoothing, axis=0, mode="nearest") if len(line) > 2 else line


def find_spine_frame(volume: Volume) -> SpineFrame | None:
    """The spine's frame of a CT (see the module's notes); None where no canal is seen.

    Args:
        volume: CT in Hounsfield units, any orientation and spacing.
    """
    grid = working_grid(volume, FRAME_SPACING_MM)
    hu = bone_hu_on(volume, grid)
    return frame_on_grid(hu, grid)


def frame_on_grid(hu: np.ndarray, grid: Grid) -> SpineFrame | None:
    """:func:`find_spine_frame` on a CT already on an isotropic RAS-aligned ``grid`` (k towards the head)."""
    spacing = float(grid.spacing[0])
    candidates = _canal_candidates(hu, spacing)
    seen = {hole.k for hole in candidates}
    candidates += [hole for hole in _canal_candidates(hu, spacing, FRAME_DIM_BONE_HU) if hole.k not in seen]
    chain = _canal_chain(candidates, spacing)
    if not chain or (chain[0].k - chain[-1].k) * spacing < MIN_CANAL_MM:
        return None
    ks = np.array([h.k for h in chain][::-1], float)  # foot to head, increasing
    centres = np.array([h.centre for h in chain][::-1])
    every_k = np.arange(int(ks[0]), int(ks[-1]) + 1, dtype=float)
    smoothing = 2.0 / spacing * 2
    canal = _line_through(ks, centres, every_k, smoothing)
    canal_ijk = np.column_stack([canal, every_k])
    canal_ras = canal_ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    return SpineFrame(canal=canal_ras[::-1])  # head to foot
