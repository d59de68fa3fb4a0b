"""The bundled disc model on phantoms that test what names the discs: the sacrum and C2 anchors, transitional
anatomy, and intensities a few hot pixels would wreck."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.choices import Task
from spineseg.discs.pipeline import label_discs
from spineseg.discs.slab import without_outliers
from spineseg.model_store import load_model
from spineseg.phantoms.mri import make_mri_phantom
from spineseg.volume import Volume


@pytest.fixture(scope="module")
def model():
    return load_model(Task.DISCS, None, "cpu")


def _positions(result) -> np.ndarray:
    return np.array([disc.position_ras for disc in result.discs])


def test_hot_voxels_change_no_disc_and_no_name(model):
    """0.05 % of the voxels at 1e6 (hot pixels of a broken coil or a bad export): the same discs, the same
    names, the same places as without them (issue 32: before, one disc instead of two)."""
    phantom = make_mri_phantom("lumbar", contrast="T2", spacing=(3.5, 1.2, 1.2), orientation="PIR", seed=123)
    clean = label_discs(phantom.image, model, device="cpu")
    values = phantom.image.array.copy()
    rng = np.random.default_rng(0)
    hot = rng.choice(values.size, size=int(0.0005 * values.size), replace=False)
    values.reshape(-1)[hot] = 1e6
    spoilt = label_discs(Volume(values, phantom.image.affine), model, device="cpu")
    assert len(clean.discs) >= 5
    assert spoilt.numbers == clean.numbers
    np.testing.assert_allclose(_positions(spoilt), _positions(clean), atol=1.0)


def test_outlier_fences_leave_an_ordinary_scan_as_it_is():
    phantom = make_mri_phantom("lumbar", contrast="T2", spacing=(3.5, 1.2, 1.2), orientation="PIR", seed=123)
    assert without_outliers(phantom.image) is phantom.image
    values = phantom.image.array.copy()
    values[0, 0, 0], values[1, 1, 1] = 1e6, -1e6
    clipped = without_outliers(Volume(values, phantom.image.affine)).array
    inner = phantom.image.array
    assert inner.max() * 1.01 <= clipped.max() <= 3 * inner.max() and clipped.min() >= -inner.max()


def _top_cut_off(image: Volume, share: float) -> Volume:
    """The image without its upper ``share`` (grid axis j runs head to foot in a PIR phantom)."""
    cut = int(share * image.shape[1])
    affine = image.affine.copy()
    affine[:3, 3] = image.ijk_to_ras(np.array([0, cut, 0]))[0]
    return Volume(np.ascontiguousarray(image.array[:, cut:, :]), affine)


@pytest.mark.parametrize("tilt", [(10.0, 0.0, 0.0), (-10.0, 0.0, 0.0)], ids=["leaning back", "leaning forward"])
def test_sacrum_anchor_names_a_tilted_lumbar_chain_with_its_top_cut_off(model, tilt):
    """A lumbar scan tilted 10 degrees whose upper 40 % is cut off (no T12 or ribs to count from): the discs are
    counted up from L5/S1, which the sacrum below fixes, and every disc found carries its own name."""
    phantom = make_mri_phantom("lumbar", contrast="T2", spacing=(3.5, 1.0, 1.0), orientation="PIR", seed=8,
                               rotation_deg=tilt, margin_mm=40.0)
    image = _top_cut_off(phantom.image, 0.4)
    truth = {number: point for number, point in phantom.disc_points.items() if image.ras_to_ijk(point)[0][1] >= 0}
    result = label_discs(image, model, device="cpu")
    assert result.naming.anchor == "sacrum", result.warnings
    assert result.numbers == sorted(truth) == [21, 22, 23, 24, 25]
    for disc in result.discs:  # named right within 5 mm head to foot, as the real exams are scored
        assert abs(disc.position_ras[2] - truth[disc.number][2]) <= 5.0, (disc.name, disc.position_ras)


def test_a_disc_below_l5_s1_is_flagged_as_transitional_not_counted(model):
    """A lumbarised S1 (a disc between S1 and S2): the discs keep their names counted from the disc above it
    as L5/S1, and the result's warnings (discs.json) say that a disc-like junction lies below L5/S1."""
    phantom = make_mri_phantom("lumbar", contrast="T2", spacing=(3.5, 1.0, 1.0), orientation="PIR", seed=11,
                               margin_mm=60.0, lumbarised_s1=True)
    result = label_discs(phantom.image, model, device="cpu")
    assert result.naming.anchor == "sacrum"
    assert any("disc-like junction lies below L5/S1" in warning for warning in result.warnings)
    assert result.numbers[-1] == 25
    l5_s1 = result.discs[-1].position_ras[2]
    assert abs(l5_s1 - phantom.disc_points[25][2]) <= 5.0
    plain = label_discs(make_mri_phantom("lumbar", contrast="T2", spacing=(3.5, 1.0, 1.0), orientation="PIR",
                                         seed=11, margin_mm=60.0).image, model, device="cpu")
    assert not any("junction" in warning for warning in plain.warnings) and plain.numbers == result.numbers


@pytest.mark.parametrize("tilt", [10.0, -10.0])
def test_c2_anchor_names_a_tilted_cervical_chain_whose_first_disc_is_c1_c2(model, tilt):
    """A cervical scan with the head above, tilted 10 degrees: the first disc found sits at C1/C2 (the network
    marks it in both anchor channels), is named C1/C2, and the names below count on from it (before, a tilt
    made the chain start at "C2/C3" and every name one level low)."""
    phantom = make_mri_phantom("cervical", contrast="T2", spacing=(3.0, 0.8, 0.8), orientation="PIR", seed=3,
                               head=True, rotation_deg=(tilt, 0.0, 0.0))
    result = label_discs(phantom.image, model, device="cpu")
    assert result.naming.anchor == "C2"
    first = result.discs[0]
    assert first.name == "C1/C2" and abs(first.position_ras[2] - phantom.disc_points[2][2]) <= 3.0
    for disc in result.discs:
        assert abs(disc.position_ras[2] - phantom.disc_points[disc.number][2]) <= 3.0, (disc.name, result.numbers)
