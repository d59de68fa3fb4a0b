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
