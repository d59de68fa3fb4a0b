"""What older spines show on CT, in the phantoms and their generated appearance: gas and calcium in discs,
osteophytes bridging two bodies, compressed and wedged bodies, fatty marrow, low-dose noise."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from spineseg.phantoms import ct as ct_module
from spineseg.phantoms import ct_appearance
from spineseg.phantoms.ct import make_ct_phantom, random_compressions, random_ct_phantom
from spineseg.phantoms.ct_appearance import (CT_APPEARANCE, DISC_CALCIUM, DISC_GAS, OSTEOPHYTE,
                                             ct_generation_classes)
from spineseg.phantoms.ct_tissue import Tissue
from spineseg.phantoms.synth import synthesize

REALISTIC = replace(CT_APPEARANCE, realistic_probability=1.0)


@pytest.fixture(scope="module")
def phantom():
    return make_ct_phantom(list(range(19, 23)), spacing=2.0, seed=4)


def test_a_vacuum_disc_holds_gas_inside_its_nucleus_and_reads_as_gas(phantom, monkeypatch):
    monkeypatch.setattr(ct_appearance, "DISC_GAS_PROBABILITY", 1.0)
    tissue = phantom.tissue.array
    classes = ct_generation_classes(tissue, np.random.default_rng(0), 2.0)
    gas = classes == DISC_GAS
    assert gas.any() and (tissue[gas] == Tissue.NUCLEUS).all()
    image = synthesize(classes, phantom.image.spacing, REALISTIC, np.random.default_rng(0))
    assert image[gas].mean() < -200.0 < image[tissue == Tissue.ANNULUS].mean()


def test_a_calcified_disc_is_bright_within_the_disc(phantom, monkeypatch):
    monkeypatch.setattr(ct_appearance, "DISC_CALCIUM_PROBABILITY", 1.0)
    tissue = phantom.tissue.array
    classes = ct_generation_classes(tissue, np.random.default_rng(1), 2.0)
    calcium = classes == DISC_CALCIUM
    assert calcium.any() and np.isin(tissue[calcium], (Tissue.NUCLEUS, Tissue.ANNULUS)).all()
    image = synthesize(classes, phantom.image.spacing, REALISTIC, np.random.default_rng(1))
    assert image[calcium].mean() > 150.0


def test_an_osteophyte_bridges_two_vertebral_bodies_and_belongs_to_neither(phantom, monkeypatch):
    monkeypatch.setattr(ct_appearance, "OSTEOPHYTE_PROBABILITY", 1.0)
    tissue, labels = phantom.tissue.array, phantom.labels.array
    classes = ct_generation_classes(tissue, np.random.default_rng(2), 2.0)
    spur = classes == OSTEOPHYTE
    assert spur.any() and (labels[spur] == 0).all()
    # bone and spur together: one piece that holds the bone of two neighbouring vertebrae
    pieces, _ = ndimage.label(spur | (labels > 0))
    bridged = [set(np.unique(labels[(pieces == piece) & (labels > 0)]).tolist())
               for piece in np.unique(pieces[spur])]
    assert any(len(levels) >= 2 for levels in bridged), bridged
    image = synthesize(classes, phantom.image.spacing, REALISTIC, np.random.default_rng(2))
    assert image[spur].mean() > image[tissue == Tissue.ANNULUS].mean() + 100.0


def _heights_mm(phantom, level: int, spacing: float) -> tuple[float, float]:
    """Head-foot extent (mm) of a vertebra near the front of its body and 20 mm behind (axes: R, A, S)."""
    mask = phantom.labels.array == level
    front = np.flatnonzero(mask.any(axis=(0, 2)))[-1]
    extents = []
    for depth_mm in (4.0, 20.0):
        rows = np.flatnonzero(mask[:, front - int(round(depth_mm / spacing))].any(axis=0))
        extents.append((rows[-1] - rows[0] + 1) * spacing)
    return extents[0], extents[1]


def test_a_wedged_body_is_lower_in_front_and_keeps_its_back(monkeypatch):
    monkeypatch.setattr(ct_module, "COMPRESSION_PROBABILITY", 1.0)
    monkeypatch.setattr(ct_module, "random_compressions", lambda levels, rng: {21: (0.55, 0.95)})
    wedged = random_ct_phantom(np.random.default_rng(5), spacing=2.0)
    monkeypatch.setattr(ct_module, "random_compressions", lambda levels, rng: {})
    plain = random_ct_phantom(np.random.default_rng(5), spacing=2.0)
    front, back = _heights_mm(wedged, 21, 2.0)
    plain_front, plain_back = _heights_mm(plain, 21, 2.0)
    assert front < 0.75 * plain_front and back > 0.8 * plain_back
    # its neighbours are untouched
    assert (wedged.labels.array == 22).sum() == pytest.approx((plain.labels.array == 22).sum(), rel=0.02)


def test_random_compressions_are_flat_or_wedged_at_t4_to_l5():
    draws = [random_compressions(list(range(16, 25)), np.random.default_rng(seed)) for seed in range(40)]
    assert all(1 <= len(d) <= 2 and set(d) <= set(range(16, 25)) for d in draws)
    factors = [f for d in draws for f in d.values()]
    assert all(0.5 <= front <= back <= 1.0 for front, back in factors)
    assert any(front == back for front, back in factors) and any(front < back - 0.1 for front, back in factors)
    assert random_compressions([3, 4, 5], np.random.default_rng(0)) == {}


def test_noise_reaches_low_dose():
    classes = np.full((24, 24, 24), Tissue.PSOAS, np.uint8)
    model = replace(REALISTIC, kernel_mm=(0.1, 0.1), slice_thickness_mm=(0.1, 0.1), blob_amplitude=0.0,
                    noise_correlation_voxels=(0.0, 0.0))
    spread = [synthesize(classes, (3.0,) * 3, model, np.random.default_rng(seed)).std() for seed in range(30)]
    assert max(spread) > 100.0 and min(spread) < 40.0
