"""One image with its geometry: the only way arrays travel through the core.

Axis convention (used everywhere in ``spineseg``): ``array[i, j, k]`` with
``i, j, k`` the image's column, row and slice indices, and ``affine`` the 4x4
matrix that maps ``(i, j, k, 1)`` to RAS millimetres. SimpleITK and Slicer give
``[k, j, i]`` arrays and LPS files; :mod:`spineseg.io` and the Slicer glue are
the only places that convert.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

__all__ = ["Volume", "VolumeKind", "affine_from_geometry", "LPS_FROM_RAS"]

# Files (NIfTI, NRRD, DICOM, .seg.nrrd, .mrk.json) speak LPS, the core and MRML speak RAS: the two
# differ by flipping x and y, and the flip is its own inverse.
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


class VolumeKind(enum.Enum):
    """Whether a volume holds intensities or labels; labels resample nearest-neighbour."""

    INTENSITY = "intensity"
    LABEL = "label"


def affine_from_geometry(
    spacing: tuple[float, float, float] | np.ndarray,
    origin: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 0.0),
    direction: np.ndarray | None = None,
) -> np.ndarray:
    """Build an IJK-to-RAS affine from spacing, RAS origin and a 3x3 direction matrix.

    ``direction``'s columns are the RAS unit vectors of the i, j and k axes.
    """
    spacing = np.asarray(spacing, dtype=float)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[np.newaxis, :]
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return affine


@dataclass(frozen=True)
class Volume:
    """A 3D array indexed ``[i, j, k]`` plus its IJK-to-RAS affine.

    Args:
        array: 3D numpy array.
        affine: 4x4 IJK-to-RAS matrix in millimetres.
        kind: intensities or labels (decides interpolation when resampling).
    """

    array: np.ndarray
    affine: np.ndarray
    kind: VolumeKind = VolumeKind.INTENSITY
    _spacing: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            raise TypeError(f"Volume.array must be a numpy array, got {type(self.array).__name__}")
        if self.array.ndim != 3:
            raise InputError(
                f"expected a 3D image, got {self.array.ndim} dimension(s) with shape {self.array.shape}"
            )
        if min(self.array.shape) < 1:
            raise InputError(f"the image is empty (shape {self.array.shape})")
        affine = np.asarray(self.affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise InputError(f"the image geometry is not a finite 4x4 affine: {self.affine!r}")
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        if np.any(spacing <= 1e-6):
            raise InputError(f"the voxel spacing must be positive, got {tuple(np.round(spacing, 6))} mm")
        if abs(np.linalg.det(affine[:3, :3] / spacing)) < 1e-3:
            raise InputError("the image direction matrix is singular: its axes are not independent")
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "_spacing", spacing)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return self._spacing.copy()

    @property
    def origin(self) -> np.ndarray:
        """RAS position in mm of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the RAS unit vectors of the i, j, k axes."""
        return self.affine[:3, :3] / self._spacing[np.newaxis, :]

    def with_array(self, array: np.ndarray, kind: VolumeKind | None = None) -> "Volume":
        """Same geometry, new voxels (shape must match)."""
        if array.shape != self.array.shape:
            raise ValueError(f"new array shape {array.shape} differs from {self.array.shape}")
        return Volume(array, self.affine, self.kind if kind is None else kind)

    def ijk_to_ras(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices (N x 3, fractional allowed) to RAS mm."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ras_to_ijk(self, ras: np.ndarray) -> np.ndarray:
        """Map RAS mm points (N x 3) to fractional voxel indices."""
        ras = np.atleast_2d(np.asarray(ras, dtype=float))
        return (ras - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    def same_grid(self, other: "Volume", tolerance: float = 1e-4) -> bool:
        """True if both volumes share shape and geometry."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=tolerance)

    def __repr__(self) -> str:
        axes = orientation_code(self.direction)
        return (
            f"Volume(shape={self.shape}, spacing={tuple(np.round(self.spacing, 3))}, "
            f"orientation={axes}, dtype={self.array.dtype}, kind={self.kind.value})"
        )


def orientation_code(direction: np.ndarray) -> str:
    """Three letters naming where each axis points, e.g. 'RAS' or 'LPI'."""
    letters = (("L", "R"), ("P", "A"), ("I", "S"))
    code = ""
    for column in np.asarray(direction).T:
        axis = int(np.argmax(np.abs(column)))
        code += letters[axis][1 if column[axis] > 0 else 0]
    return code


__all__.append("orientation_code")
