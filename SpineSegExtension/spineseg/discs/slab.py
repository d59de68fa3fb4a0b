"""The 2D network input: a thin mid-sagittal slab of the MRI, with its way back to 3D.

Steps, all from the image itself (never from labels):

1. Canonical frame: the slab is sampled on a grid aligned with the scanner's
   RAS axes, whatever the volume's voxel order, spacing or obliquity. Rows run
   superior to inferior, columns anterior to posterior, so a sagittal slice
   looks the same for every input orientation.
2. Mid-sagittal plane: the left-right position ``x0`` at the centre of the
   band of sagittal planes richest in edges (end plates, canal, laminae),
   see :func:`find_midsagittal_x`.
3. Slab: the mean of the planes ``x0 - 3 .. x0 + 3`` mm (about 6 mm, as in the
   published method), z-scored over the pixels inside the scan, on a square
   ``size x size`` grid covering the scan's head-foot and front-back extent
   (at least ``size * min_pixel_mm``, so small crops are not magnified).

``Slab.slab_to_ras`` maps (row, column, 1) of the slab to RAS mm exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume

__all__ = ["Slab", "extract_slab", "slab_planes", "find_midsagittal_x", "volume_ras_bounds", "refine_lateral",
           "without_outliers"]

log = logging.getLogger(__name__)

# Mid-sagittal search: each candidate plane is resampled to about this many pixels a side (end plates and
# the canal stay visible, and a plane every millimetre stays cheap).
PLANE_PIXELS = 96
# Planes whose edge energy is below this percentile are the baseline: the spine's bump covers the fewer,
# richer planes, the flank tissue the many plain ones.
BASELINE_PERCENTILE = 40.0
# Planes with fewer valid pixels than this share of the best-covered one are not trusted (oblique corners).
MIN_PLANE_COVERAGE = 0.5
# Fewer trusted planes than this cannot show a bump: the plane through the scan's centre is used.
MIN_TRUSTED_PLANES = 3
# The energy profile is smoothed over this many neighbouring planes (1 mm apart) against noise.
SMOOTHING_PLANES = 3
# A slab with fewer pixels inside the scan than this has not cut it.
MIN_INSIDE_PIXELS = 16
# Left-right refinement: in-plane sampling step (mm) of the window around a point; the fewest mirrored
# plane pairs a symmetry cost is judged on; and the cost added per millimetre moved, so that a flat
# profile keeps the point where the slab put it.
LATERAL_SAMPLE_MM = 1.5
MIN_MIRRORED_PLANES = 4
SHIFT_COST_PER_MM = 0.002
# How far left and right of a point the refinement samples; it moves a point at most half of that (a point
# moved the whole way has its centre at or beyond the edge of the search, and is not to be trusted).
LATERAL_REACH_MM = 20.0
MAX_LATERAL_SHIFT_MM = LATERAL_REACH_MM / 2
# Robust intensities: values beyond the fences OUTLIER_FENCE bulk-widths (OUTLIER_PERCENTILE to the median) past
# the OUTLIER_PERCENTILE-th and (100 - OUTLIER_PERCENTILE)-th percentiles are outliers (a few hot pixels at 1e6
# would otherwise set the slab's z-score and the mid-plane's edges); percentiles from about OUTLIER_SAMPLES voxels.
OUTLIER_PERCENTILE = 0.5
OUTLIER_FENCE = 1.0
OUTLIER_SAMPLES = 1_000_000


@dataclass(frozen=True)
class Slab:
    """A z-scored sagittal image and the exact map from its pixels to RAS mm.

    Attributes:
        image: (size, size) float32, zero mean and unit variance inside the scan.
        slab_to_ras: 3x3, (row, column, 1) -> (R, A, S) mm.
        inside: (size, size) bool, True where the slab lies inside the scan.
        plane_x: R coordinate (mm) of the mid-sagittal plane at head-foot position ``plane_s``.
        pixel_mm: pixel size in mm (square pixels).
        lateral_slope: how far the plane moves to the right per mm towards the head (0: a true sagittal plane;
            a spine leaning to one side is read on a plane tilted with it).
        plane_s: S coordinate (mm) at which the plane's R is ``plane_x``.
    """

    image: np.ndarray
    slab_to_ras: np.ndarray
    inside: np.ndarray
    plane_x: float
    pixel_mm: float
    lateral_slope: float = 0.0
    plane_s: float = 0.0

    def plane_r(self, s_mm: np.ndarray | float) -> np.ndarray:
        """R (mm) of the slab's plane at head-foot position(s) ``s_mm``."""
        return self.plane_x + self.lateral_slope * (np.asarray(s_mm, dtype=float) - self.plane_s)

    def pixel_to_ras(self, rows_cols: np.ndarray) -> np.ndarray:
        """(N, 2) fractional (row, column) -> (N, 3) RAS mm on the mid-sagittal plane."""
        rc = np.atleast_2d(np.asarray(rows_cols, dtype=float))
        return np.column_stack([rc, np.ones(len(rc))]) @ self.slab_to_ras.T

    def ras_to_pixel(self, ras: np.ndarray) -> np.ndarray:
        """(N, 3) RAS mm -> (N, 2) fractional (row, column), projecting onto the plane."""
        ras = np.atleast_2d(np.asarray(ras, dtype=float))
        offset = self.slab_to_ras[:, 2]
        rows = (ras[:, 2] - offset[2]) / self.slab_to_ras[2, 0]
        cols = (ras[:, 1] - offset[1]) / self.slab_to_ras[1, 1]
        return np.column_stack([rows, cols])


def volume_ras_bounds(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """RAS box (mm) around the centres of the volume's corner voxels."""
    n = np.array(volume.shape) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], dtype=float)
    ras = volume.ijk_to_ras(corners)
    return ras.min(axis=0), ras.max(axis=0)


def _sample(volume: Volume, array: np.ndarray, ras: np.ndarray) -> np.ndarray:
    """Linear interpolation at RAS points (..., 3); NaN outside the scan."""
    flat = ras.reshape(-1, 3)
    ijk = volume.ras_to_ijk(flat)
    values = ndimage.map_coordinates(array, ijk.T, order=1, mode="constant", cval=np.nan)
    # Points within half a voxel of the border count as inside (nearest edge value).
    edge = np.isnan(values)
    if np.any(edge):
        limits = np.array(volume.shape) - 1
        near = edge & np.all((ijk >= -0.5) & (ijk <= limits + 0.5), axis=1)
        if np.any(near):
            clipped = np.clip(ijk[near], 0, limits)
            values[near] = ndimage.map_coordinates(array, clipped.T, order=1, mode="nearest")
    return values.reshape(ras.shape[:-1])


def without_outliers(volume: Volume) -> Volume:
    """``volume`` with its intensities clipped to fences set by percentiles, so that a few extreme voxels (hot
    pixels, a value of 1e6 in 0.05 % of the voxels) change neither the mid-plane nor the slab's z-score.

    The fences lie ``OUTLIER_FENCE`` times the distance from the median to the 0.5th (99.5th) percentile beyond
    that percentile: an ordinary scan's brightest fat and fluid stay as they are. The same volume is returned
    when nothing lies beyond them.
    """
    values = volume.array
    step = max(int(values.size // OUTLIER_SAMPLES), 1)
    sample = values.reshape(-1)[::step].astype(np.float64)
    low, middle, high = np.percentile(sample, [OUTLIER_PERCENTILE, 50.0, 100.0 - OUTLIER_PERCENTILE])
    lower, upper = low - OUTLIER_FENCE * (middle - low), high + OUTLIER_FENCE * (high - middle)
    if values.min() >= lower and values.max() <= upper:
        return volume
    log.debug("intensities clipped to %.4g .. %.4g (outliers beyond the percentile fences)", lower, upper)
    clipped = np.clip(values.astype(np.float32), np.float32(lower), np.float32(upper))
    return Volume(clipped, volume.affine, volume.kind)


def find_midsagittal_x(volume: Volume, step_mm: float = 1.0) -> float:
    """R coordinate of the mid-sagittal plane of the spine, from the image alone.

    The spine is the part of a sagittal image with the most edges: disc and
    vertebral end plates, the canal, the laminae. Each plane 1 mm apart is
    resampled (about ``PLANE_PIXELS`` a side) and scored by its mean in-plane gradient
    magnitude; planes well above the profile's baseline form a bump centred on
    the spine, and the bump's weighted centre (which is robust to the flat
    top the bump has across the vertebral bodies) is the answer.
    """
    lower, upper = volume_ras_bounds(volume)
    array = volume.array.astype(np.float32, copy=False)
    if upper[0] - lower[0] < 2.0:
        return float((lower[0] + upper[0]) / 2)
    xs = np.arange(lower[0], upper[0] + 1e-6, step_mm)
    step = max((upper[1] - lower[1]) / PLANE_PIXELS, (upper[2] - lower[2]) / PLANE_PIXELS, 1.0)
    ys = np.arange(lower[1], upper[1] + 1e-6, step)
    zs = np.arange(lower[2], upper[2] + 1e-6, step)
    grid = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1)
    planes = ndimage.map_coordinates(
        array, volume.ras_to_ijk(grid.reshape(-1, 3)).T, order=1, mode="constant", cval=np.nan
    ).reshape(len(xs), len(ys), len(zs))  # NaN outside the scan
    gy = np.abs(np.diff(planes, axis=1))[:, :, :-1]
    gz = np.abs(np.diff(planes, axis=2))[:, :-1, :]
    gradient = gy + gz
    valid = np.isfinite(gradient)
    counts = valid.sum(axis=(1, 2))
    energy = np.where(valid, gradient, 0.0).sum(axis=(1, 2)) / np.maximum(counts, 1)
    usable = counts >= MIN_PLANE_COVERAGE * counts.max()
    if usable.sum() < MIN_TRUSTED_PLANES:
        return float((lower[0] + upper[0]) / 2)
    energy = ndimage.uniform_filter1d(np.where(usable, energy, 0.0), SMOOTHING_PLANES)
    baseline = np.percentile(energy[usable], BASELINE_PERCENTILE)
    weights = np.where(usable, np.clip(energy - baseline, 0.0, None), 0.0) ** 2
    if weights.sum() <= 0:
        return float((lower[0] + upper[0]) / 2)
    x0 = float((weights * xs).sum() / weights.sum())
    log.debug("mid-sagittal plane at R = %.1f mm", x0)
    return x0


def extract_slab(
    volume: Volume,
    size: int = 256,
    thickness_mm: float = 6.0,
    plane_x: float | None = None,
    min_pixel_mm: float = 0.7,
    window: tuple[float, float, float] | None = None,
    lateral_slope: float = 0.0,
) -> Slab:
    """Cut the mid-sagittal slab the network reads.

    Args:
        volume: the MRI, any orientation and spacing.
        size: output height and width in pixels.
        thickness_mm: slab thickness; planes 1 mm apart are averaged.
        plane_x: R coordinate of the mid-sagittal plane; found from the image when None.
        min_pixel_mm: smallest pixel size; images smaller than ``size * min_pixel_mm``
            are centred on a larger canvas (outside pixels are 0 after z-scoring).
        window: (A, S, pixel) in mm: a slab centred there with that pixel size instead of one holding the
            whole image (z-scored over the window).
        lateral_slope: the plane's R changes by this much per mm of S (a spine leaning to one side); the plane
            passes through ``plane_x`` at the scan's head-foot centre.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if thickness_mm < 0:
        raise ValueError(f"thickness_mm must be >= 0, got {thickness_mm}")
    lower, upper = volume_ras_bounds(volume)
    extent = upper - lower
    if max(extent[1], extent[2]) < 1e-3:
        raise InputError("the image has no extent in the sagittal plane")
    x0 = find_midsagittal_x(volume) if plane_x is None else float(plane_x)
    # Small crops are padded rather than blown up, so anatomy keeps about the
    # scale the network was trained on (phantom slabs have 0.7-1.6 mm pixels).
    pixel = max(float(max(extent[1], extent[2])) / (size - 1), min_pixel_mm)
    centre_y, centre_z = (lower[1] + upper[1]) / 2, (lower[2] + upper[2]) / 2
    if window is not None:
        centre_y, centre_z, pixel = (float(value) for value in window)
    half = (size - 1) / 2
    plane_s = float((lower[2] + upper[2]) / 2)  # the plane passes through x0 here, for every window
    top_s = centre_z + half * pixel
    # (row, col, 1) -> RAS: rows go down (towards I), columns go back (towards P); R follows a tilted plane.
    slab_to_ras = np.array([
        [-lateral_slope * pixel, 0.0, x0 + lateral_slope * (top_s - plane_s)],
        [0.0, -pixel, centre_y + half * pixel],
        [-pixel, 0.0, top_s],
    ])
    array = volume.array.astype(np.float32, copy=False)
    total = np.zeros((size, size))
    count = np.zeros((size, size))
    for points in slab_planes(slab_to_ras, size, thickness_mm):
        values = _sample(volume, array, points)
        ok = np.isfinite(values)
        total[ok] += values[ok]
        count[ok] += 1
    inside = count > 0
    image = np.zeros((size, size), dtype=np.float32)
    if inside.sum() < MIN_INSIDE_PIXELS:
        raise InputError("the mid-sagittal plane does not cut the image; is it a sagittal-capable 3D scan?")
    mean_values = total[inside] / count[inside]
    mu, sd = float(mean_values.mean()), float(mean_values.std())
    image[inside] = ((mean_values - mu) / (sd if sd > 1e-8 else 1.0)).astype(np.float32)
    return Slab(image=image, slab_to_ras=slab_to_ras, inside=inside, plane_x=x0, pixel_mm=pixel,
                lateral_slope=float(lateral_slope), plane_s=plane_s)


def slab_planes(slab_to_ras: np.ndarray, size: int, thickness_mm: float) -> list[np.ndarray]:
    """RAS points (size, size, 3) of each plane a slab averages: 1 mm apart, centred on the slab's plane."""
    rows, cols = np.meshgrid(np.arange(size, dtype=float), np.arange(size, dtype=float), indexing="ij")
    plane = np.stack([rows, cols, np.ones_like(rows)], axis=-1) @ slab_to_ras.T
    offsets = np.arange(-thickness_mm / 2, thickness_mm / 2 + 1e-6, 1.0) if thickness_mm > 0 else np.zeros(1)
    return [plane + np.array([dx, 0.0, 0.0]) for dx in offsets - offsets.mean()]


def refine_lateral(volume: Volume, points_ras: np.ndarray, reach_mm: float = LATERAL_REACH_MM,
                   window_mm: float = 12.0) -> np.ndarray:
    """Move each point left-right onto the centre of the structure around it.

    The slab gives a disc's front-back and head-foot position; its left-right
    position is only the slab plane. Around each point, the image is sampled on
    planes 1 mm apart over +-``reach_mm`` left-right and +-``window_mm`` in
    the sagittal plane; the profile of the mean absolute left-right difference
    between mirrored planes is smallest at the centre of a symmetric structure
    (the disc between its two lateral edges). Points whose profile is flat stay.
    """
    points = np.atleast_2d(np.asarray(points_ras, dtype=float)).copy()
    if len(points) == 0:
        return points
    array = volume.array.astype(np.float32, copy=False)
    offsets = np.arange(-reach_mm, reach_mm + 1e-6, 1.0)
    local = np.arange(-window_mm, window_mm + 1e-6, LATERAL_SAMPLE_MM)
    dy, dz = np.meshgrid(local, local, indexing="ij")
    for index, point in enumerate(points):
        grid = np.stack([
            np.broadcast_to(point[0] + offsets[:, None, None], (len(offsets),) + dy.shape),
            np.broadcast_to(point[1] + dy, (len(offsets),) + dy.shape),
            np.broadcast_to(point[2] + dz, (len(offsets),) + dy.shape),
        ], axis=-1)
        planes = ndimage.map_coordinates(array, volume.ras_to_ijk(grid.reshape(-1, 3)).T, order=1,
                                         mode="constant", cval=np.nan).reshape(len(offsets), -1)
        best, best_cost = 0.0, np.inf
        centre_index = len(offsets) // 2
        for shift in range(-int(reach_mm // 2), int(reach_mm // 2) + 1):
            c = centre_index + shift
            half = min(c, len(offsets) - 1 - c)
            if half < MIN_MIRRORED_PLANES:
                continue
            left, right = planes[c - half : c][::-1], planes[c + 1 : c + half + 1]
            difference = np.abs(left - right)
            if not np.isfinite(difference).any():
                continue
            cost = float(np.nanmean(difference)) + SHIFT_COST_PER_MM * abs(shift)
            if cost < best_cost:
                best, best_cost = float(offsets[c]), cost
        points[index, 0] = point[0] + best
    return points
