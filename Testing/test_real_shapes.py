"""Real vertebra shapes from the VerSe sample, painted in a phantom vertebra's frame."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_real_data
from spineseg.anatomy import level_size
from spineseg.phantoms.ct_bones import vertebra_extent
from spineseg.phantoms.layout import PlacedVertebra
from spineseg.phantoms.real_shapes import FAR_MM, RealShapeLibrary

L3 = 22


@pytest.fixture(scope="module")
def library() -> RealShapeLibrary:
    folder = require_real_data("ct_verse_sample")
    return RealShapeLibrary.load(folder / "sub-verse004_seg-vert_msk.nii.gz",
                                 folder / "sub-verse004_seg-subreg_ctd.json")


def _phantom(level: int) -> PlacedVertebra:
    return PlacedVertebra(level, level_size(level), np.zeros(3), np.eye(3))


def _grid(vertebra: PlacedVertebra, step: float, pad: float = 0.0) -> list[np.ndarray]:
    lo, hi = vertebra_extent(vertebra)
    axes = [np.arange(a - pad, b + pad, step, dtype=np.float32) for a, b in zip(lo, hi)]
    return np.meshgrid(*axes, indexing="ij")


def test_levels_t9_to_l5(library):
    assert library.levels == tuple(range(16, 25))


def test_same_seed_same_shape(library):
    vertebra = _phantom(L3)
    u, v, w = _grid(vertebra, 3.0)
    first = library.signed_distance(L3, vertebra, u, v, w, np.random.default_rng(7))
    again = library.signed_distance(L3, vertebra, u, v, w, np.random.default_rng(7))
    other = library.signed_distance(L3, vertebra, u, v, w, np.random.default_rng(8))
    assert first.dtype == np.float32 and first.shape == u.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_l3_body_centred_with_plausible_volume(library, seed):
    vertebra = _phantom(L3)
    size = vertebra.size
    u, v, w = _grid(vertebra, 1.0, pad=10.0)
    inside = library.signed_distance(L3, vertebra, u, v, w, np.random.default_rng(seed)) <= 0
    body = inside & (v > -size.body_depth / 2)
    centre = np.array([u[body].mean(), v[body].mean(), w[body].mean()])
    assert np.all(np.abs(centre) < 3.0), centre

    real = library.shape(L3)
    height, width, depth = real.body_size
    ratio = size.body_height / height * size.body_width / width * size.body_depth / depth
    expected = real.volume_mm3 * ratio
    assert 0.55 * expected < inside.sum() < 1.45 * expected


@pytest.mark.parametrize("level", range(16, 25))
def test_every_level_has_body_in_front_and_processes_behind(library, level):
    vertebra = _phantom(level)
    size = vertebra.size
    u, v, w = _grid(vertebra, 2.0)
    inside = library.signed_distance(level, vertebra, u, v, w, np.random.default_rng(level)) <= 0
    body = inside & (v > -size.body_depth / 2)
    assert abs(v[body].mean()) < 4.0 and abs(w[body].mean()) < 4.0
    posterior = inside & (v < -size.body_depth / 2 - 5.0)
    assert posterior.sum() > 0.15 * inside.sum()
    # The spinous process points backwards in the midline.
    assert np.any(posterior & (np.abs(u) < 4.0) & (v < -size.body_depth / 2 - size.canal_depth - 5.0))


def test_far_outside_is_large_and_positive(library):
    vertebra = _phantom(L3)
    sd = library.signed_distance(L3, vertebra, *(np.full((2, 2, 2), 400.0, np.float32),) * 3,
                                 np.random.default_rng(0))
    assert np.all(sd > 0.5 * FAR_MM)


def test_level_not_held_is_named(library):
    vertebra = _phantom(5)
    u, v, w = _grid(vertebra, 4.0)
    with pytest.raises(ValueError, match=r"no real vertebra shape for level 5.*\[16, 17"):
        library.signed_distance(5, vertebra, u, v, w, np.random.default_rng(0))


def test_mismatched_coordinates_are_refused(library):
    with pytest.raises(ValueError, match="share a shape"):
        library.signed_distance(L3, _phantom(L3), np.zeros((2, 2, 2), np.float32),
                                np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 2), np.float32),
                                np.random.default_rng(0))


def test_missing_label_map_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere" / "sub-verse004_seg-vert_msk.nii.gz"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*ct_verse_sample"):
        RealShapeLibrary.load(missing)


def test_more_verse_maps_join_the_library_and_a_fractured_body_paints_only_its_own_level(library):
    from pathlib import Path

    from spineseg.phantoms.real_shapes import real_stand_ins

    shapes = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "verse_shapes"
    if not (shapes / "sub-verse010_seg-vert_msk.nii.gz").is_file():
        pytest.skip(f"training shapes not available at {shapes}")
    lumbar = RealShapeLibrary.load(shapes / "sub-verse010_seg-vert_msk.nii.gz",
                                   shapes / "sub-verse010_seg-subreg_ctd.json")
    assert lumbar.levels == tuple(range(20, 25))  # L1-L5
    merged = RealShapeLibrary.merged([library, lumbar])
    assert merged.levels == tuple(range(16, 25)) and len(merged.all_shapes[22]) == 2
    # the sample's fractured L1 is never drawn for another level; the new, whole L1 is
    assert [real.fractured for real in merged.all_shapes[20]] == [True, False]
    assert merged.choices(20) == [lumbar.shape(20)]
    assert real_stand_ins([19, 20, 21], library) == {19: 19, 20: 19, 21: 21}
    assert real_stand_ins([19, 20, 21], merged) == {19: 19, 20: 20, 21: 21}
    # a level held twice takes either real shape, chosen by the seed (no jitter: the shape alone sets the volume)
    fixed = RealShapeLibrary(merged.all_shapes, scale_jitter=0.0, max_tilt_deg=0.0)
    vertebra = _phantom(L3)
    u, v, w = _grid(vertebra, 2.0)
    volumes = {int((fixed.signed_distance(L3, vertebra, u, v, w, np.random.default_rng(seed)) <= 0).sum())
               for seed in range(8)}
    assert len(volumes) == 2
