"""Slab extraction: canonical frame, mid-sagittal plane and the exact way back to RAS."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.discs.slab import extract_slab, find_midsagittal_x
from spineseg.phantoms.mri import _rotation, axes_from_code
from spineseg.volume import Volume, affine_from_geometry


def _rotated_volume(spot_ras: np.ndarray, midline_x: float) -> Volume:
    """Oblique, anisotropic grid holding a striped 'spine' column and one bright spot."""
    spacing = np.array([3.5, 0.8, 1.1])
    direction = _rotation((7.0, -5.0, 12.0)) @ axes_from_code("PIR")
    shape = (150, 180, 24)  # P (0.8 mm... rotated), I, R axes
    spacing = np.array([0.8, 1.1, 3.5])
    centre = np.array([midline_x, 0.0, 0.0])
    origin = centre - direction @ (spacing * (np.array(shape) - 1) / 2)
    affine = affine_from_geometry(spacing, origin, direction)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    x, y, z = ras.T
    column = np.exp(-((x - midline_x) ** 2) / (2 * 9.0**2)) * np.exp(-(y**2) / (2 * 25.0**2))
    image = column * (1.0 + 0.8 * np.sign(np.sin(z / 4.0)))
    image += 6.0 * np.exp(-np.sum((ras - spot_ras) ** 2, axis=1) / (2 * 2.0**2))
    return Volume(image.reshape(shape).astype(np.float32), affine)


def test_midsagittal_plane_found_from_image():
    volume = _rotated_volume(np.array([4.0, 5.0, 10.0]), midline_x=4.0)
    assert abs(find_midsagittal_x(volume) - 4.0) < 1.75


def test_known_point_maps_back_within_half_a_voxel():
    spot = np.array([4.0, 6.0, -12.0])
    volume = _rotated_volume(spot, midline_x=4.0)
    slab = extract_slab(volume, size=256)
    assert slab.image.shape == (256, 256)
    assert abs(float(slab.image[slab.inside].mean())) < 1e-3
    assert float(slab.image[slab.inside].std()) == pytest.approx(1.0, abs=1e-3)
    row, col = np.unravel_index(int(np.argmax(slab.image)), slab.image.shape)
    # Sub-pixel peak: intensity-weighted centre of the 5x5 window.
    window = slab.image[row - 2 : row + 3, col - 2 : col + 3]
    weights = np.clip(window - window.min(), 0, None)
    rr, cc = np.mgrid[-2:3, -2:3]
    peak = np.array([row + (weights * rr).sum() / weights.sum(), col + (weights * cc).sum() / weights.sum()])
    back = slab.pixel_to_ras(peak)[0]
    half_voxel = 0.5 * float(np.max(volume.spacing))
    assert np.all(np.abs(back - spot) <= half_voxel), (back, spot)
    # The two maps are inverse on the plane.
    assert np.allclose(slab.ras_to_pixel(slab.pixel_to_ras(peak)), peak)
    assert slab.slab_to_ras[2, 0] < 0 and slab.slab_to_ras[1, 1] < 0  # rows go down, columns go back
