"""MRI training images from generation classes: aligned with the anatomy, varied, deterministic per seed."""

import numpy as np
import pytest

from conftest import require_real_data
from spineseg.phantoms.mri import LowerSacrum, MRITissue, make_mri_phantom, random_mri_phantom
from spineseg.phantoms.mri_appearance import MRI_CONTRAST_MODELS, synthesize_mri
from spineseg.phantoms.real_shapes import load_sample_folder
from spineseg.phantoms.synth import OUTSIDE_CLASS
from spineseg.training.tasks.discs import phantom_sample, synthetic_slab

DISC_CLASSES = (MRITissue.NUCLEUS, MRITissue.DEGENERATE_NUCLEUS, MRITissue.ANNULUS)


@pytest.fixture(scope="module")
def sample():
    return phantom_sample(np.random.default_rng(11), size=128, variety=True)


def test_every_disc_centre_lies_in_a_disc_class_and_the_image_follows_the_classes():
    phantom = make_mri_phantom("lumbar", contrast="T2", spacing=(3.0, 1.2, 1.2), seed=4)
    for point in phantom.disc_points.values():
        ijk = tuple(np.rint(phantom.image.ras_to_ijk(point)[0]).astype(int))
        assert phantom.classes[ijk] == MRITissue.NUCLEUS
    image = phantom.image.array
    # T2: the nucleus and CSF are bright, cortex and muscle dark, in the phantom's own image.
    assert image[phantom.classes == MRITissue.NUCLEUS].mean() > 2 * image[phantom.classes == MRITissue.MUSCLE].mean()
    assert image[phantom.classes == MRITissue.CSF].mean() > 2 * image[phantom.classes == MRITissue.CORTEX].mean()


def test_variety_keeps_the_spine_and_adds_the_head_and_degenerate_discs():
    cervical = list(range(1, 10))
    plain = random_mri_phantom(np.random.default_rng(5), levels=cervical)
    varied = random_mri_phantom(np.random.default_rng(5), levels=cervical, variety=True)
    assert plain.disc_points.keys() == varied.disc_points.keys()
    for number, point in plain.disc_points.items():
        np.testing.assert_allclose(varied.disc_points[number], point)
    heads = [random_mri_phantom(np.random.default_rng(seed), levels=cervical, variety=True) for seed in range(6)]
    with_head = [p for p in heads if (p.classes == MRITissue.BRAIN).any()]
    assert with_head and not (plain.classes == MRITissue.BRAIN).any()
    for phantom in with_head:  # the brain lies above the atlas
        atlas = next(v for v in phantom.layout.vertebrae if v.level == 1)
        brain = phantom.image.ijk_to_ras(np.argwhere(phantom.classes == MRITissue.BRAIN))
        assert np.median(brain[:, 2]) > atlas.centre[2] + 20.0
    degenerate = sum(int((p.classes == MRITissue.DEGENERATE_NUCLEUS).any()) for p in heads)
    assert degenerate >= 1


def _classes_along(phantom, start, direction, lengths_mm):
    """The generation class at points ``start + length * direction`` (RAS mm)."""
    points = start + np.outer(lengths_mm, direction)
    ijk = np.rint(phantom.image.ras_to_ijk(points)).astype(int)
    return phantom.classes[tuple(ijk.T)]


def test_a_lumbosacral_junction_with_remnants_keeps_l5_s1_the_lowest_named_disc():
    """Young and varied sacra (training for issue 29): S1/S2 and S2/S3 remnant discs lie in the sacrum below L5/S1
    as disc tissue but are not disc points; the sacrum's top plate meets the L5/S1 disc right below its centre;
    a narrowed L5/S1 is thinner and lifts the sacrum; the sacral slope is the one asked for."""
    common = dict(contrast="T2", spacing=(3.0, 1.0, 1.0), seed=4, margin_mm=90.0)
    lower = LowerSacrum(remnant_heights_mm=(3.0, 2.0, 0.0), remnant_scale=0.8, remnant_nucleus=True, bend_deg=15.0)
    phantom = make_mri_phantom("lumbar", **common, sacral_slope_deg=50.0, lower_sacrum=lower,
                               narrowed_discs={25: 0.5}, degenerate_discs=frozenset({25}))
    plain = make_mri_phantom("lumbar", **common)
    assert max(phantom.disc_points) == 25 and phantom.disc_points.keys() == plain.disc_points.keys()

    sacrum, l5_s1 = phantom.layout.vertebrae[-1], phantom.layout.discs[-1]
    slope = np.degrees(np.arccos(sacrum.frame[2, 2]))  # the top plate's normal against the head-foot axis
    assert slope == pytest.approx(50.0, abs=0.1)
    assert l5_s1.height == pytest.approx(0.5 * plain.layout.discs[-1].height, rel=0.15)
    # Down from the L5/S1 centre along the sacrum's axis: disc, then within 2 mm of its lower face, S1's bone.
    down = -sacrum.frame[:, 2]
    below = _classes_along(phantom, l5_s1.centre, down, np.arange(0.0, l5_s1.height / 2 + 4.0, 0.5))
    assert below[0] == MRITissue.DEGENERATE_NUCLEUS
    bone = np.isin(below, (MRITissue.CORTEX, MRITissue.MARROW))
    assert bone.any() and np.argmax(bone) * 0.5 <= l5_s1.height / 2 + 2.0
    # Inside the sacrum, 28 and 48 mm below its top plate (S1/S2 and S2/S3): disc tissue, no disc point there.
    top_plate = sacrum.centre + sacrum.frame[:, 2] * 6.0
    for depth in (28.0, 48.0):
        along = _classes_along(phantom, top_plate, down, np.arange(depth - 2.0, depth + 2.5, 0.5))
        assert np.isin(along, DISC_CLASSES).any(), depth
        assert all(np.linalg.norm(point - (top_plate + depth * down)) > 20.0 for point in phantom.disc_points.values())
    # The plain phantom's sacrum is one block: no disc tissue at S1/S2.
    plain_sacrum = plain.layout.vertebrae[-1]
    plain_top = plain_sacrum.centre + plain_sacrum.frame[:, 2] * 6.0
    along = _classes_along(plain, plain_top, -plain_sacrum.frame[:, 2], np.arange(26.0, 30.5, 0.5))
    assert not np.isin(along, DISC_CLASSES).any()


def test_lumbosacral_variety_leaves_the_other_draws_and_the_training_slabs_on_their_discs():
    """``lumbosacral=True`` is drawn after everything else: the same seed gives the same field of view and disc
    names; the training slab of such a phantom keeps its disc points on disc classes."""
    levels = list(range(20, 25)) + [26]
    plain = random_mri_phantom(np.random.default_rng(7), levels=levels, variety=True)
    varied = random_mri_phantom(np.random.default_rng(7), levels=levels, variety=True, lumbosacral=True)
    assert plain.disc_points.keys() == varied.disc_points.keys()
    np.testing.assert_allclose(varied.disc_points[21], plain.disc_points[21], atol=8.0)  # discs below may narrow
    sample = phantom_sample(np.random.default_rng(4), size=128, variety=True, lumbosacral=True)
    middle = sample.classes.shape[-1] // 2
    on_discs = {number: sample.classes[int(round(r)), int(round(c)), middle] in DISC_CLASSES
                for number, (r, c) in sample.points.items() if 0 <= r <= 127 and 0 <= c <= 127}
    assert on_discs[25] and np.mean(list(on_discs.values())) >= 0.8


def test_the_same_seed_draws_the_same_mri_and_another_seed_another(sample):
    pixel = float(np.linalg.norm(sample.slab_to_ras[:, 0]))
    first = synthesize_mri(sample.classes, (pixel, pixel, 1.0), np.random.default_rng(3))
    again = synthesize_mri(sample.classes, (pixel, pixel, 1.0), np.random.default_rng(3))
    other = synthesize_mri(sample.classes, (pixel, pixel, 1.0), np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 0.01
    assert np.all(first[sample.classes == OUTSIDE_CLASS] == 0.0)


def test_realistic_t2_and_stir_keep_csf_brighter_than_the_cord(sample):
    for name in ("T2", "STIR"):
        prior = MRI_CONTRAST_MODELS[name].priors
        assert prior[MRITissue.CSF].mean[0] > prior[MRITissue.CORD].mean[1]
    # STIR suppresses fat: darker than in T1.
    assert MRI_CONTRAST_MODELS["STIR"].priors[MRITissue.FAT].mean[1] < MRI_CONTRAST_MODELS["T1"].priors[MRITissue.FAT].mean[0]


def test_synthetic_slabs_stay_on_their_disc_points_and_are_z_scored_inside(sample):
    size = sample.image.shape[0]
    middle = sample.classes.shape[-1] // 2
    on_discs = [sample.classes[int(round(r)), int(round(c)), middle] for r, c in sample.points.values()
                if 0 <= r <= size - 1 and 0 <= c <= size - 1]
    assert on_discs and np.mean([value in DISC_CLASSES for value in on_discs]) >= 0.8
    inside = (sample.classes != OUTSIDE_CLASS).any(axis=-1)
    np.testing.assert_array_equal(inside, sample.image != 0)  # the slab's own outside, as extract_slab leaves it
    image = synthetic_slab(sample, np.random.default_rng(0))
    assert image.shape == sample.image.shape
    assert np.all(image[~inside] == 0.0)
    assert abs(float(image[inside].mean())) < 1e-3 and abs(float(image[inside].std()) - 1.0) < 1e-2


@pytest.fixture(scope="module")
def real_vertebrae():
    folder = require_real_data("ct_verse_sample")
    return load_sample_folder(folder)


def test_real_vertebrae_replace_the_bone_and_keep_the_discs_on_their_points(real_vertebrae):
    settings = dict(contrast="T2", spacing=(3.0, 1.0, 1.0), seed=4)
    analytic = make_mri_phantom("lumbar", **settings)
    real = make_mri_phantom("lumbar", real_shapes=real_vertebrae, **settings)
    again = make_mri_phantom("lumbar", real_shapes=real_vertebrae, **settings)
    np.testing.assert_array_equal(real.image.array, again.image.array)
    assert real.disc_points.keys() == analytic.disc_points.keys()
    # The bone is another shape: a good part of the marrow moved.
    marrow_analytic, marrow_real = analytic.classes == MRITissue.MARROW, real.classes == MRITissue.MARROW
    assert (marrow_analytic ^ marrow_real).sum() > 0.2 * marrow_analytic.sum()
    for number, point in real.disc_points.items():
        ijk = tuple(np.rint(real.image.ras_to_ijk(point)[0]).astype(int))
        assert real.classes[ijk] == MRITissue.NUCLEUS, number
        if not 21 <= number <= 24:  # discs with a real vertebra above and below (L1/L2-L4/L5)
            continue
        # From the disc centre up and down its axis: disc, then bone; no soft tissue fills a concave endplate.
        disc = next(d for d in real.layout.discs if d.number == number)
        steps = np.arange(-disc.height / 2 - 6.0, disc.height / 2 + 6.0, 0.5)
        ijk = np.rint(real.image.ras_to_ijk(disc.centre + steps[:, None] * disc.frame[:, 2])).astype(int)
        along = set(real.classes[tuple(ijk.T)].tolist())
        assert along <= {*DISC_CLASSES, MRITissue.CORTEX, MRITissue.MARROW}, (number, along)
