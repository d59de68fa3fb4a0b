"""Working grids and resampling between an input image and a model's grid.

A model sees images on an isotropic grid whose axes point (close to) right,
anterior and superior, whatever the scanner's orientation. ``working_grid``
builds that grid from the input's own axes (permuted and flipped, never
rotated, so an axial scan stays axis-aligned), and ``resample_to`` moves data
between grids by their RAS affines.

Orientation invariance: the working grid depends only on the physical image
(its footprint in RAS), never on how the file stores the voxels. The 48 axis
orders and flips of one image give the same grid, bit for bit, and the same
working image: corners are snapped to ``GRID_SNAP_MM`` so that rounding in the
affines cannot add or drop a slice, and a point counts as inside the image
when it lies within the outer voxels' faces (``FACE_TOLERANCE_VOXELS``), not
by a floating-point comparison with the outermost voxel centres.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .volume import Volume, VolumeKind

__all__ = ["closest_ras_axes", "working_grid", "resample_to", "inside_footprint", "Grid"]

# Working-grid corners are rounded to this (mm): far below any scanner's precision, far above the rounding
# noise (about 1e-13 mm) of affines that store the same image in another axis order.
GRID_SNAP_MM = 1e-4
# A point this far (in voxels) beyond an image's outer voxel faces is still inside: the same rounding noise.
FACE_TOLERANCE_VOXELS = 1e-3


class Grid:
    """A voxel grid without data: shape plus IJK-to-RAS affine."""

    def __init__(self, shape: tuple[int, int, int], affine: np.ndarray) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.affine = np.asarray(affine, dtype=float)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def __repr__(self) -> str:
        return f"Grid(shape={self.shape}, spacing={tuple(np.round(self.spacing, 3))})"


def closest_ras_axes(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of R, A, S: which image axis points closest to it, and with which sign.

    Returns ``(axes, signs)`` such that image axis ``axes[n]`` times ``signs[n]``
    points along RAS axis ``n``.
    """
    direction = np.asarray(direction, dtype=float)
    weights = np.abs(direction)  # weights[ras_axis, image_axis]
    axes = -np.ones(3, dtype=int)
    remaining_ras, remaining_image = [0, 1, 2], [0, 1, 2]
    for _ in range(3):  # greedy assignment by the largest component left
        sub = weights[np.ix_(remaining_ras, remaining_image)]
        r, c = np.unravel_index(np.argmax(sub), sub.shape)
        ras_axis, image_axis = remaining_ras.pop(r), remaining_image.pop(c)
        axes[ras_axis] = image_axis
    signs = np.array([np.sign(direction[n, axes[n]]) or 1.0 for n in range(3)])
    return axes, signs


def working_grid(volume: Volume, spacing: float) -> Grid:
    """An isotropic grid covering ``volume`` whose axes are its own axes, reordered to RAS.

    Args:
        volume: the input image.
        spacing: voxel size of the grid in mm.
    """
    if spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    axes, signs = closest_ras_axes(volume.direction)
    direction = volume.direction[:, axes] * signs[np.newaxis, :]
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in volume.shape], indexing="ij")).reshape(3, -1).T
    corners_ras = volume.ijk_to_ras(corners)
    projected = corners_ras @ direction  # coordinates along the new axes
    low = np.round(projected.min(axis=0) / GRID_SNAP_MM) * GRID_SNAP_MM
    high = np.round(projected.max(axis=0) / GRID_SNAP_MM) * GRID_SNAP_MM
    shape = np.maximum(np.ceil((high - low) / spacing - 1e-6).astype(int), 1)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = direction @ (low + spacing / 2)
    return Grid(tuple(shape), affine)


def _index_mapping(source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """4x4 matrix mapping target voxel indices to source voxel indices."""
    return np.linalg.inv(source_affine) @ target_affine


def resample_to(
    volume: Volume,
    grid: Grid,
    fill_value: float = 0.0,
    order: int | None = None,
    dtype: np.dtype | type = np.float32,
    antialias: bool = True,
) -> Volume:
    """Resample ``volume`` onto ``grid``.

    Labels use nearest neighbour and keep their integer type; intensities use
    linear interpolation (``order`` overrides) and, when the grid is much
    coarser, a Gaussian pre-filter against aliasing. Points outside the
    volume's footprint (its outer voxel faces) get ``fill_value``; points
    between the outermost voxel centres and those faces take the nearest
    voxel's value, so an edge slice never depends on rounding.
    """
    mapping = _index_mapping(volume.affine, grid.affine)
    is_label = volume.kind is VolumeKind.LABEL
    order = (0 if is_label else 1) if order is None else order
    source = volume.array
    if not is_label and antialias:
        ratio = grid.spacing.min() / volume.spacing
        sigma = np.where(ratio > 1.5, 0.4 * ratio, 0.0)
        if np.any(sigma > 0):
            source = ndimage.gaussian_filter(source.astype(np.float32, copy=False), sigma=sigma, mode="nearest")
    output_dtype = volume.array.dtype if is_label else dtype
    resampled = ndimage.affine_transform(
        source,
        mapping[:3, :3],
        offset=mapping[:3, 3],
        output_shape=grid.shape,
        output=output_dtype,
        order=order,
        mode="nearest",
        prefilter=False,
    )
    resampled[~inside_footprint(volume.shape, mapping, grid.shape)] = fill_value
    return Volume(resampled, grid.affine, volume.kind)


def inside_footprint(source_shape: tuple[int, ...], mapping: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean array of ``shape``: which target voxels ``mapping`` (target to source indices, 4x4) sends
    within the source's outer voxel faces. Computed one slice at a time to keep memory small."""
    low = -0.5 - FACE_TOLERANCE_VOXELS
    high = np.asarray(source_shape, dtype=float) - 0.5 + FACE_TOLERANCE_VOXELS
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    inside = np.empty(shape, dtype=bool)
    for k in range(shape[2]):
        slice_inside = np.ones(shape[:2], dtype=bool)
        for axis in range(3):
            coordinate = mapping[axis, 0] * i + mapping[axis, 1] * j + (mapping[axis, 2] * k + mapping[axis, 3])
            slice_inside &= (coordinate >= low) & (coordinate <= high[axis])
        inside[:, :, k] = slice_inside
    return inside
