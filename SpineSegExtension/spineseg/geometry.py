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

Field-of-view invariance: the working grid's faces lie on a lattice of its own
spacing in scanner coordinates (along its axes), not at the scan's edge, so a
scan cut wider, narrower or padded with air is sampled at the same points in
the body, and the network sees the same voxels where both scans hold them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .volume import Volume, VolumeKind

__all__ = ["closest_ras_axes", "working_grid", "resample_to", "inside_footprint", "Grid", "turned_about_centre"]

# Working-grid corners are rounded to this (mm): far below any scanner's precision, far above the rounding
# noise (about 1e-13 mm) of affines that store the same image in another axis order.
GRID_SNAP_MM = 1e-4
# Nearest-neighbour sampling moves every point this far (voxels) up before rounding: a point exactly half-way
# between two voxels (which the lattice of the working grid makes common) then always takes the upper one,
# whatever rounding noise the whole-volume and the slab-by-slab paths add to it.
NEAREST_TIE_BREAK = 1e-6
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
    # Faces on the lattice of multiples of ``spacing``: the grid covers the scan, at most a voxel beyond it.
    low = np.floor(low / spacing + 1e-6) * spacing
    high = np.ceil(high / spacing - 1e-6) * spacing
    shape = np.maximum(np.round((high - low) / spacing).astype(int), 1)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = direction @ (low + spacing / 2)
    return Grid(tuple(shape), affine)


def _index_mapping(source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """4x4 matrix mapping target voxel indices to source voxel indices."""
    return np.linalg.inv(source_affine) @ target_affine


def _source_box(
    mapping: np.ndarray, target: list[slice], reach: np.ndarray, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The box of source voxels (start, stop) that the ``target`` box of grid voxels reads, ``reach`` voxels
    beyond the floor of its mapped coordinates, clipped to the source's ``shape``."""
    corners = np.array(np.meshgrid(*[[s.start, s.stop - 1] for s in target], indexing="ij")).reshape(3, -1)
    points = mapping[:3, :3] @ corners + mapping[:3, 3:4]
    low = np.maximum(np.floor(points.min(axis=1)).astype(int) - reach, 0)
    high = np.minimum(np.floor(points.max(axis=1)).astype(int) + reach + 1, shape)
    return low, high


# Sources larger than this many voxels are resampled in slabs of the target grid, each from the part of
# the source it needs (its float32 and blurred copies hold about this many voxels), so a large CT
# (512 x 512 x 1000) never needs float32 copies of the whole image. A slab's interpolated values may
# differ from a whole-volume pass in the last bit (its offset is rounded differently); typical scans
# (up to 512 x 512 x 120) are one slab.
RESAMPLE_CHUNK_VOXELS = 32_000_000
# Gaussian kernels reach this many standard deviations (SciPy's default truncation).
GAUSSIAN_TRUNCATE = 4.0
# The standard deviation of a box one voxel wide, in voxels (1 / sqrt(12)): a voxel's own blur.
BOX_TO_GAUSSIAN = 1.0 / np.sqrt(12.0)


def resample_to(
    volume: Volume,
    grid: Grid,
    fill_value: float = 0.0,
    order: int | None = None,
    dtype: np.dtype | type = np.float32,
    antialias: bool = True,
    chunk_voxels: int = RESAMPLE_CHUNK_VOXELS,
    blur_to_mm: float | None = None,
) -> Volume:
    """Resample ``volume`` onto ``grid``.

    Labels use nearest neighbour and keep their integer type; intensities are
    read as float32 and use linear interpolation (``order`` overrides) and, when the grid is much
    coarser, a Gaussian pre-filter against aliasing. Points outside the
    volume's footprint (its outer voxel faces) get ``fill_value``; points
    between the outermost voxel centres and those faces take the nearest
    voxel's value, so an edge slice never depends on rounding. A large source
    is resampled in slabs of the target grid (see ``chunk_voxels``), on all CPU cores.

    ``blur_to_mm`` replaces the anti-aliasing rule by a fixed sharpness: each axis is blurred so that its
    voxels' own extent (a box of one voxel, standard deviation ``0.29 x spacing``) plus the blur make a
    Gaussian of that standard deviation (mm). Scans of the same anatomy at any sampling then give the same
    resampled image, up to their own sharpness where it is worse.
    """
    mapping = _index_mapping(volume.affine, grid.affine)
    is_label = volume.kind is VolumeKind.LABEL
    order = (0 if is_label else 1) if order is None else order
    sigma = np.zeros(3)
    if not is_label and blur_to_mm is not None:
        own_mm = BOX_TO_GAUSSIAN * volume.spacing
        sigma = np.sqrt(np.maximum(blur_to_mm**2 - own_mm**2, 0.0)) / volume.spacing
    elif not is_label and antialias:
        ratio = grid.spacing.min() / volume.spacing
        sigma = np.where(ratio > 1.5, 0.4 * ratio, 0.0)
    # Source voxels a target point reads beyond the floor of its coordinates: the interpolation's
    # footprint, then the blur's reach (a blurred voxel is exact only that far inside its crop).
    reach = np.full(3, max(order, 1)) + np.where(sigma > 0, (GAUSSIAN_TRUNCATE * sigma + 0.5).astype(int), 0)
    output = np.empty(grid.shape, dtype=volume.array.dtype if is_label else dtype)
    axis = int(np.argmax(grid.shape))
    count = int(min(grid.shape[axis], max(1, np.ceil(volume.array.size / chunk_voxels))))
    bounds = np.linspace(0, grid.shape[axis], count + 1).round().astype(int)

    def resample_slab(start: int, stop: int) -> None:
        target = [slice(0, n) for n in grid.shape]
        target[axis] = slice(start, stop)
        low, high = np.zeros(3, int), np.array(volume.shape)  # one slab: the whole source
        if count > 1:
            low, high = _source_box(mapping, target, reach, volume.shape)
        if np.any(high <= low):  # the slab lies outside the source
            output[tuple(target)] = fill_value
            return
        source = volume.array[tuple(slice(a, b) for a, b in zip(low, high))]
        if not is_label:
            source = source.astype(np.float32, copy=False)
        if np.any(sigma > 0):
            source = ndimage.gaussian_filter(source, sigma=sigma, mode="nearest", truncate=GAUSSIAN_TRUNCATE)
        first = np.array([s.start for s in target])
        slab_mapping = mapping.copy()
        slab_mapping[:3, 3] = mapping[:3, 3] + mapping[:3, :3] @ first  # slab indices -> source indices
        slab_shape = tuple(s.stop - s.start for s in target)
        slab = ndimage.affine_transform(
            source,
            mapping[:3, :3],
            offset=slab_mapping[:3, 3] - low + (NEAREST_TIE_BREAK if order == 0 else 0.0),
            output_shape=slab_shape,
            output=output.dtype,
            order=order,
            mode="nearest",  # the crop's edges are the source's edges wherever a target point reaches them
            prefilter=False,
        )
        slab[~inside_footprint(volume.shape, slab_mapping, slab_shape)] = fill_value
        output[tuple(target)] = slab

    with ThreadPoolExecutor(max_workers=min(count, os.cpu_count() or 1)) as pool:
        list(pool.map(resample_slab, bounds[:-1], bounds[1:]))
    return Volume(output, grid.affine, volume.kind)


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


def turned_about_centre(volume: Volume, tilt_r_deg: float = 0.0, tilt_a_deg: float = 0.0,
                        scale: float = 1.0) -> np.ndarray:
    """The 4 x 4 RAS-to-RAS map that tilts ``volume`` about its centre and resizes it by ``scale``: about the R
    axis by ``tilt_r_deg`` (positive: the head goes back), then about the A axis by ``tilt_a_deg`` (positive: the
    head goes to the patient's left). ``map @ volume.affine`` is the affine of the same voxels lying so; points
    in the anatomy move by the same map."""
    # Extrinsic: the tilt to one side first, then the lean back (right-handed rotations; R points right).
    linear = scale * Rotation.from_euler("yx", [-tilt_a_deg, tilt_r_deg], degrees=True).as_matrix()
    centre = volume.ijk_to_ras((np.array(volume.shape) - 1) / 2)[0]
    moved = np.eye(4)
    moved[:3, :3] = linear
    moved[:3, 3] = centre - linear @ centre
    return moved
