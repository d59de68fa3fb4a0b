"""Tests of the CT spine phantom generator (small phantoms at 2-3 mm, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from spineseg.anatomy import SACRUM, STANDARD_LEVELS
from spineseg.phantoms.ct import CTPhantom, make_ct_phantom, orientation_matrix, random_ct_phantom
from spineseg.volume import VolumeKind

LUMBAR = [20, 21, 22, 23, 24]


def _volumes_ml(phantom: CTPhantom) -> dict[int, float]:
    labels = phantom.labels.array
    voxel_ml = float(np.prod(phantom.labels.spacing)) / 1000.0
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    return {int(v): float(c) * voxel_ml for v, c in zip(values, counts)}


def _centroids_ras(phantom: CTPhantom) -> dict[int, np.ndarray]:
    labels = phantom.labels.array
    result = {}
    for level in np.unique(labels[labels > 0]):
        ijk = np.argwhere(labels == level).mean(axis=0)
        result[int(level)] = phantom.labels.ijk_to_ras(ijk)[0]
    return result


@pytest.fixture(scope="module")
def lumbar() -> CTPhantom:
    return make_ct_phantom(LUMBAR + [SACRUM], spacing=(2.0, 2.0, 2.0), seed=3, field_of_view_cut=False)


@pytest.fixture(scope="module")
def lumbar_cut() -> CTPhantom:
    return make_ct_phantom(LUMBAR + [SACRUM], spacing=(2.0, 2.0, 2.0), seed=3, field_of_view_cut=True)


def test_types_and_grid(lumbar: CTPhantom) -> None:
    assert lumbar.image.array.dtype == np.int16 and lumbar.image.kind is VolumeKind.INTENSITY
    assert lumbar.labels.array.dtype == np.uint8 and lumbar.labels.kind is VolumeKind.LABEL
    assert lumbar.image.same_grid(lumbar.labels)
    assert np.allclose(lumbar.image.spacing, 2.0)
    assert [v.level for v in lumbar.layout.vertebrae] == LUMBAR + [SACRUM]


def test_labels_are_the_requested_levels(lumbar: CTPhantom) -> None:
    assert sorted(_volumes_ml(lumbar)) == LUMBAR + [SACRUM]


def test_each_vertebra_is_one_component_of_plausible_volume(lumbar: CTPhantom) -> None:
    labels = lumbar.labels.array
    for level in LUMBAR + [SACRUM]:
        _, count = ndimage.label(labels == level, structure=np.ones((3, 3, 3)))
        assert count == 1, f"level {level} has {count} components"
    volumes = _volumes_ml(lumbar)
    assert 30.0 <= volumes[22] <= 80.0
    for level in LUMBAR:
        assert 20.0 <= volumes[level] <= 100.0
    assert 60.0 <= volumes[SACRUM] <= 250.0


def test_vertebrae_ordered_head_to_foot(lumbar: CTPhantom) -> None:
    centroids = _centroids_ras(lumbar)
    z = [centroids[level][2] for level in LUMBAR + [SACRUM]]
    assert all(a > b for a, b in zip(z[:-1], z[1:]))


def test_hounsfield_ranges(lumbar: CTPhantom) -> None:
    image, labels = lumbar.image.array, lumbar.labels.array
    assert 150 < image[labels > 0].mean() < 600  # the real CT's lumbar vertebrae: about 220 HU at 3 mm
    assert image.min() >= -1024 and image.max() <= 3071
    # The grid's most posterior rows lie behind the patient (and the table): air.
    ras_j = lumbar.image.direction[:, 1]
    assert ras_j[1] > 0.99  # RAS grid: j runs posterior -> anterior
    assert abs(float(np.median(image[:, :2, :])) + 1000.0) < 40.0
    # Discs are soft tissue between the bodies.
    disc = lumbar.layout.discs[1]
    ijk = np.rint(lumbar.image.ras_to_ijk(disc.centre)[0]).astype(int)
    assert labels[tuple(ijk)] == 0 and 0 < image[tuple(ijk)] < 200


def test_same_seed_same_arrays_and_different_seeds_differ() -> None:
    kwargs = dict(spacing=(3.0, 3.0, 3.0), field_of_view_cut=True)
    a = make_ct_phantom([21, 22, 23], seed=5, **kwargs)
    b = make_ct_phantom([21, 22, 23], seed=5, **kwargs)
    c = make_ct_phantom([21, 22, 23], seed=6, **kwargs)
    assert np.array_equal(a.image.array, b.image.array)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert np.allclose(a.image.affine, b.image.affine)
    assert a.image.shape != c.image.shape or not np.array_equal(a.labels.array, c.labels.array)


def test_orientation_and_anisotropic_spacing_give_the_same_anatomy() -> None:
    levels = [21, 22, 23]
    ras = make_ct_phantom(levels, spacing=(2.0, 2.0, 2.0), orientation="RAS", seed=2, field_of_view_cut=False)
    lps = make_ct_phantom(levels, spacing=(1.5, 1.5, 3.0), orientation="LPS", seed=2, field_of_view_cut=False)
    oblique = make_ct_phantom(levels, spacing=(2.0, 2.5, 2.0), orientation="PIR", rotation_deg=20.0, seed=2,
                              field_of_view_cut=False)
    assert lps.image.direction[0, 0] == pytest.approx(-1.0) and lps.image.direction[1, 1] == pytest.approx(-1.0)
    vol_ras, cen_ras = _volumes_ml(ras), _centroids_ras(ras)
    for other in (lps, oblique):
        vol, cen = _volumes_ml(other), _centroids_ras(other)
        assert sorted(vol) == levels
        for level in levels:
            assert abs(vol[level] - vol_ras[level]) <= 0.10 * vol_ras[level]
            assert np.linalg.norm(cen[level] - cen_ras[level]) <= 2.0


def test_field_of_view_cut_leaves_end_vertebrae_partial(lumbar: CTPhantom, lumbar_cut: CTPhantom) -> None:
    full, cut = _volumes_ml(lumbar), _volumes_ml(lumbar_cut)
    assert set(cut) <= set(full) and {21, 22, 23, 24} <= set(cut)
    assert cut[20] < 0.9 * full[20]
    assert cut[SACRUM] < 0.9 * full[SACRUM]
    for level in (21, 22, 23):
        assert cut[level] == pytest.approx(full[level], rel=0.02)
    # The end vertebrae touch the scan's top and bottom slices.
    labels = lumbar_cut.labels.array
    assert 20 in labels[:, :, -1] and SACRUM in labels[:, :, 0]


def test_cervical_atlas_axis_and_ribs() -> None:
    phantom = make_ct_phantom([1, 2, 3, 4, 5, 6, 7, 8, 9], spacing=(2.0, 2.0, 2.0), seed=1, field_of_view_cut=False)
    labels, image = phantom.labels.array, phantom.image.array
    assert sorted(_volumes_ml(phantom)) == list(range(1, 10))
    for level in (1, 2):
        _, count = ndimage.label(labels == level, structure=np.ones((3, 3, 3)))
        assert count == 1
    # Ribs (T1, T2) are bone but not labelled: bright voxels outside all vertebrae exist.
    assert np.count_nonzero((image > 400) & (labels == 0)) > 50


def test_random_training_phantom() -> None:
    phantom = random_ct_phantom(np.random.default_rng(11), spacing=(3.0, 3.0, 3.0))
    present = sorted(_volumes_ml(phantom))
    positions = [STANDARD_LEVELS.index(level) for level in present]
    assert positions == list(range(positions[0], positions[0] + len(positions)))
    assert 3 <= len(present) <= 18
    assert phantom.image.array.dtype == np.int16
    assert np.allclose(phantom.image.direction, np.eye(3))


def test_orientation_matrix() -> None:
    assert np.allclose(orientation_matrix("LPS"), np.diag([-1.0, -1.0, 1.0]))
    pir = orientation_matrix("PIR")
    assert np.allclose(pir[:, 0], [0, -1, 0]) and np.allclose(pir[:, 1], [0, 0, -1]) and np.allclose(pir[:, 2], [1, 0, 0])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(levels=[20, 22]), "levels"),
        (dict(levels=[22, 21]), "levels"),
        (dict(levels=[30]), "levels"),
        (dict(levels=[]), "levels"),
        (dict(spacing=(1.0, 0.0, 1.0)), "spacing"),
        (dict(spacing=(1.0, -2.0, 1.0)), "spacing"),
        (dict(orientation="XYZ"), "orientation"),
        (dict(orientation="RRS"), "orientation"),
        (dict(noise_hu=-1.0), "noise_hu"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, name: str) -> None:
    levels = kwargs.pop("levels", [22])
    with pytest.raises(ValueError, match=name):
        make_ct_phantom(levels, **kwargs)
