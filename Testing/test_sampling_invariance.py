"""The same anatomy gets the same names from a scan at any sampling, and a mirrored grid changes nothing.

The bundled model runs on one phantom drawn at several samplings (the same
seed draws the same anatomy on any grid) and on a left-handed copy of it.
Measured with vertebrae-ct-synth-v7 (L1-sacrum, the top cut by the scan):
names identical everywhere; volumes against the 1 mm scan within 8 % at
0.7 mm, within 11 % (L1, cut: 29 %) at 2 mm and up to 48 % at 1 x 1 x 2.5 mm,
where bone refinement sees each boundary through 2.5 mm slices.

The shared real CT (3 mm, ../shared/data/real) runs as it is and as copies made
from it (:func:`spineseg.perturbation.resampled_scan`): names identical and
volumes within 10 % is the target (issue 32). Where a copy does not meet it yet,
the case is a strict xfail whose reason holds the figure measured with
``tools/sampling_invariance.py`` (2026-12-07), so that a fix shows up as a failure
to be turned into a pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import require_real_data
from spineseg.choices import Task
from spineseg.io import read_volume
from spineseg.labels import vertebra_name
from spineseg.model_store import load_model
from spineseg.perturbation import mirrored_scan, resampled_scan
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.vertebrae.pipeline import segment_vertebrae
from spineseg.volume import Volume

LEVELS = [20, 21, 22, 23, 24, 26]


@pytest.fixture(scope="module")
def model():
    return load_model(Task.VERTEBRAE, None, "cpu")


def volumes(image: Volume, model) -> dict[int, float]:
    result = segment_vertebrae(image, model)
    return {record.level: record.volume_ml for record in result.vertebrae}


def test_a_resampled_copy_holds_the_same_anatomy_in_the_same_place():
    """Coarser axes keep each region's mean HU (area-preserving), finer ones interpolate, and the copy lies where
    the scan lies (the same first face, the same point at the same voxel centre)."""
    rng = np.random.default_rng(5)
    image = Volume(rng.normal(0.0, 300.0, (12, 10, 8)).astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    coarse = resampled_scan(image, (4.0, 4.0, 6.0))
    assert coarse.shape == (9, 7, 4)
    # The first 4 x 4 x 6 mm voxel holds 3/4 and 1/4 of the first two 3 mm voxels across, half of each along.
    weights = np.einsum("i,j,k", [3.0, 1.0], [3.0, 1.0], [1.0, 1.0])
    assert coarse.array[0, 0, 0] == pytest.approx(np.average(image.array[:2, :2, :2], weights=weights), rel=1e-5)
    np.testing.assert_allclose(coarse.ijk_to_ras([-0.5, -0.5, -0.5]), image.ijk_to_ras([-0.5, -0.5, -0.5]))
    fine = resampled_scan(image, (1.5, 1.5, 1.5))
    assert fine.shape == (24, 20, 16)
    # Each 1.5 mm voxel takes the trilinear value of the 3 mm scan at its own centre.
    centre = image.ras_to_ijk(fine.ijk_to_ras([5, 6, 7]))[0]
    expected = ndimage.map_coordinates(image.array, centre[:, None], order=1)[0]
    assert fine.array[5, 6, 7] == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def reference(model) -> tuple[Volume, dict[int, float]]:
    image = make_ct_phantom(LEVELS, spacing=1.0, orientation="LPS", seed=1010).image
    return image, volumes(image, model)


def test_a_finer_scan_and_a_mirrored_grid_give_the_same_names_and_volumes(model, reference):
    """Whole vertebrae within 10 %. L1, cut by the scan's top, within 15 %: where the face cuts it depends on the
    grid (its true volume is 1.8 % larger at 0.7 mm), and its segmented one measured 9 % larger with a 1 mm core,
    9.9 % with today's 2 mm core and 11 % with a 3 mm one (docs/vertebrae-physics.md, 10)."""
    image, at_1mm = reference
    assert list(at_1mm) == LEVELS
    for copy in (make_ct_phantom(LEVELS, spacing=0.7, orientation="LPS", seed=1010).image, mirrored_scan(image)):
        found = volumes(copy, model)
        assert list(found) == LEVELS
        for level in LEVELS:
            tolerance = 0.15 if level == LEVELS[0] else 0.10
            assert found[level] == pytest.approx(at_1mm[level], rel=tolerance), level


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 1.0, 2.5)])
def test_a_coarser_or_anisotropic_scan_gives_the_same_names(model, reference, spacing):
    _, at_1mm = reference
    found = volumes(make_ct_phantom(LEVELS, spacing=spacing, orientation="LPS", seed=1010).image, model)
    assert list(found) == LEVELS
    # Whole vertebrae (not L1, cut by the scan's top) keep their volume within half.
    for level in LEVELS[1:]:
        assert found[level] == pytest.approx(at_1mm[level], rel=0.5), level
    assert np.median([found[level] / at_1mm[level] for level in LEVELS]) < 1.2


@pytest.fixture(scope="module")
def real_ct(model) -> tuple[Volume, dict[int, float]]:
    image = read_volume(require_real_data("ct_totalseg_example", "example_ct.nii.gz"))
    return image, volumes(image, model)


# Each copy of the real CT: how it is made, and why its volumes miss the target today (None: they meet it).
REAL_COPIES = {
    "mirrored": (mirrored_scan, None),
    "finer, 1.5 mm": (lambda image: resampled_scan(image, (1.5, 1.5, 1.5)), None),
    "coarser, 4 mm": (
        lambda image: resampled_scan(image, (4.0, 4.0, 4.0)),
        "names identical since the sacrum anchor reads the pelvis relative to the scan (they were one level off); "
        "volumes 63-111 % of the 3 mm run's (T12 63 %, L2 111 %, sacrum 78 %): the 4 mm canal line stops short of T12"),
    "anisotropic, 1 x 1 x 5 mm": (
        lambda image: resampled_scan(image, (1.0, 1.0, 5.0)),
        "names identical since the sacrum anchor reads the pelvis relative to the scan (they were two levels off); "
        "volumes 61-112 % of the 3 mm run's (T12 61 %, L2 112 %, sacrum 83 %): its top disc (T12/L1) is not found, "
        "so the pieces of T12 and L1 share one open slab and the chain is not used"),
}


@pytest.fixture(scope="module")
def real_copies(model, real_ct) -> dict[str, dict[int, float]]:
    """Each copy's volumes by level, segmented once for both tests below."""
    image, _ = real_ct
    return {name: volumes(make(image), model) for name, (make, _) in REAL_COPIES.items()}


@pytest.mark.parametrize("copy", list(REAL_COPIES))
def test_the_real_ct_at_another_sampling_gives_the_same_names(real_ct, real_copies, copy):
    """The sacrum anchor reads the pelvis relative to the scan's own vertebrae (anchors.py), so coarser copies keep
    it: at 4 mm and 1 x 1 x 5 mm the names were one and two levels off before (docs/vertebrae-physics.md, 5)."""
    _, plain = real_ct
    assert [vertebra_name(level) for level in real_copies[copy]] == [vertebra_name(level) for level in plain]


@pytest.mark.parametrize("copy", [
    pytest.param(name, marks=[] if why is None else pytest.mark.xfail(strict=True, reason=why))
    for name, (_, why) in REAL_COPIES.items()
])
def test_the_real_ct_at_another_sampling_gives_the_same_volumes(real_ct, real_copies, copy):
    _, plain = real_ct
    found = real_copies[copy]
    for level, volume_ml in plain.items():
        assert found[level] == pytest.approx(volume_ml, rel=0.10), vertebra_name(level)
