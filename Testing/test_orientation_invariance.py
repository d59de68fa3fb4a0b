"""The result does not depend on how a scan stores its voxels: all 48 axis orders and flips agree.

A CT phantom is stored in every permutation and flip of its axes (the same
physical image, half of them with a left-handed direction matrix), at two
grid spacings. The working image must be the same for all of them, and the
painted labels, mapped back to the first storage, the same voxel for voxel.
A fast stand-in predictor (the bone component nearest the patch centre that
is not yet in memory) replaces the network: it is a deterministic function
of the patch, so any difference would come from the geometry.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from spineseg.networks.unet3d import IterativeFCN, IterativeFCNConfig
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.networks.vertebra_model import PatchPrediction, VertebraModel, VertebraModelSettings
from spineseg.vertebrae.pipeline import prepare_working_image, segment_vertebrae
from spineseg.volume import Volume

# A scanner-like origin (RAS mm) whose sums with the voxel steps are not exact in floating point: the real
# CT of the issue lost its top slice when stored head first.
SCANNER_ORIGIN = np.array([-177.95632935, 11.31900024, 94.30175781])
STORAGES = [(order, flips) for order in itertools.permutations(range(3))
            for flips in itertools.product((False, True), repeat=3)]


class BoneComponentModel(VertebraModel):
    """A stand-in for the network: the bone piece nearest the patch centre that memory does not hold."""

    def __init__(self) -> None:
        settings = VertebraModelSettings(spacing_mm=3.0, patch_size=24, network=IterativeFCNConfig(filters=1))
        super().__init__(IterativeFCN(settings.network), settings, "cpu")

    def predict(self, image_patch: np.ndarray, memory_patch: np.ndarray) -> PatchPrediction:
        components, count = ndimage.label((image_patch > 0.2) & ~memory_patch)
        probability = np.zeros(image_patch.shape, np.float32)
        if count:
            centres = np.array(ndimage.center_of_mass(np.ones_like(components), components, range(1, count + 1)))
            nearest = 1 + int(np.argmin(np.linalg.norm(centres - (np.array(image_patch.shape) - 1) / 2, axis=1)))
            probability[components == nearest] = 0.95
        return PatchPrediction(probability, 0.9, 21.0)


def stored(volume: Volume, order: tuple[int, ...], flips: tuple[bool, ...]) -> Volume:
    """The same physical image with its array axes permuted by ``order`` and flipped where ``flips``."""
    array = volume.array.transpose(order)
    affine = np.eye(4)
    affine[:3, 3] = volume.affine[:3, 3]
    for axis, (source, flip) in enumerate(zip(order, flips)):
        affine[:3, axis] = volume.affine[:3, source]
        if flip:
            array = np.flip(array, axis)
            affine[:3, axis] *= -1
            affine[:3, 3] += volume.affine[:3, source] * (volume.shape[source] - 1)
    return Volume(np.ascontiguousarray(array), affine, volume.kind)


def unstored(array: np.ndarray, order: tuple[int, ...], flips: tuple[bool, ...]) -> np.ndarray:
    """Undo :func:`stored` on an array on the stored grid."""
    for axis, flip in enumerate(flips):
        if flip:
            array = np.flip(array, axis)
    return array.transpose(np.argsort(order))


def scanner_phantom(spacing: tuple[float, float, float]) -> Volume:
    """A small CT phantom (L1-L2) whose origin has a scanner's awkward floating-point values."""
    phantom = make_ct_phantom([21, 22], spacing=spacing, orientation="LPS", seed=4, margin_mm=10.0,
                              field_of_view_cut=False).image
    affine = phantom.affine.copy()
    affine[:3, 3] = SCANNER_ORIGIN
    return Volume(phantom.array, affine)


@pytest.fixture(scope="module")
def model() -> BoneComponentModel:
    return BoneComponentModel()


@pytest.mark.parametrize("spacing", [(3.0, 3.0, 3.0), (2.0, 1.5, 2.5)])
def test_all_48_storages_give_the_same_working_image_and_labels(model, spacing):
    phantom = scanner_phantom(spacing)
    reference_image, reference_grid = prepare_working_image(phantom, 3.0)
    reference = segment_vertebrae(phantom, model)
    assert reference.vertebrae, "the stand-in found no vertebra: the test would prove nothing"
    for order, flips in STORAGES:
        volume = stored(phantom, order, flips)
        image, grid = prepare_working_image(volume, 3.0)
        assert grid.shape == reference_grid.shape and np.array_equal(grid.affine, reference_grid.affine)
        assert np.allclose(image, reference_image, rtol=0, atol=1e-6), (order, flips)
        labels = segment_vertebrae(volume, model).label_map.array
        assert np.array_equal(unstored(labels, order, flips), reference.label_map.array), (order, flips)


def padded_with_air(volume: Volume, before: tuple[int, int, int], after: tuple[int, int, int]) -> tuple[Volume, tuple]:
    """The same scan with a wider field of view of air (-1000 HU), and where the original lies in it."""
    array = np.pad(volume.array, list(zip(before, after)), constant_values=-1000)
    affine = volume.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.array(before, float)
    return Volume(array, affine), tuple(slice(b, b + n) for b, n in zip(before, volume.shape))


@pytest.mark.parametrize("spacing", [(3.0, 3.0, 3.0), (2.0, 1.5, 2.5)])
def test_a_field_of_view_padded_with_air_gives_the_same_labels(model, spacing):
    phantom = scanner_phantom(spacing)
    reference = segment_vertebrae(phantom, model)
    assert reference.vertebrae, "the stand-in found no vertebra: the test would prove nothing"
    padded, inside = padded_with_air(phantom, (5, 7, 3), (4, 2, 11))
    image, grid = prepare_working_image(padded, 3.0)
    reference_image, reference_grid = prepare_working_image(phantom, 3.0)
    # The working grids lie on one lattice: the original's grid is a whole-voxel block of the padded one.
    offset = (np.linalg.inv(grid.affine) @ reference_grid.affine)[:3, 3]
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-6)
    start = np.round(offset).astype(int)
    block = image[tuple(slice(a, a + n) for a, n in zip(start, reference_image.shape))]
    inner = (slice(3, -3),) * 3  # the resampling's anti-aliasing reads a few voxels past the scan's edge
    np.testing.assert_allclose(block[inner], reference_image[inner], atol=1e-3)
    result = segment_vertebrae(padded, model)
    assert np.array_equal(result.label_map.array[inside], reference.label_map.array)
    beyond = result.label_map.array.copy()
    beyond[inside] = 0
    assert not beyond.any()  # nothing found in the air around the scan
    assert [v.name for v in result.vertebrae] == [v.name for v in reference.vertebrae]
