"""Contrast-filled vessels are bright like bone but are no bone: the aorta pressed against the bodies stays out of
the vertebrae, while bone of the same brightness stays in."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spineseg.vertebrae.bone_division import divide_bone
from spineseg.vertebrae.vessels import contrast_lumen

SPACING = (1.0, 1.0, 1.0)  # i (left-right), j (front-back), k (towards the head)


def noisy(shape: tuple[int, ...], hu: float, sd: float, seed: int = 0) -> np.ndarray:
    """A CT of one tissue with scanner noise."""
    return np.random.default_rng(seed).normal(hu, sd, shape).astype(np.float32)


def tube(shape: tuple[int, ...], centre: tuple[float, float], radius: float) -> np.ndarray:
    """A cylinder along k of ``radius`` mm around ``centre`` (i, j)."""
    i, j = np.ogrid[: shape[0], : shape[1]]
    disc = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 <= radius ** 2
    return np.broadcast_to(disc[..., None], shape).copy()


def test_the_aorta_pressed_against_the_bodies_is_not_labelled_vertebra_while_the_bodies_are():
    """Three thoracic bodies (2 mm cortex of 700 HU, trabecular marrow of 200 +- 60 HU, 18 mm tall, 4 mm discs of
    80 HU) with a contrast aorta (350 +- 15 HU, 24 mm across) touching their front-left cortex, along the whole
    scan. The network and the chain of bodies painted part of the aorta into the vertebrae (as on the chest CT);
    the division gives every body its own bone and marrow, and no aorta voxel to any vertebra."""
    shape = (70, 70, 72)
    hounsfield = noisy(shape, 40.0, 15.0)
    rng = np.random.default_rng(1)
    bodies = {}
    for level, bottom in zip((16, 17, 18), (48, 26, 4)):
        body = tube(shape, (30.0, 42.0), 13.0)
        body[..., : bottom] = body[..., bottom + 18:] = False
        hounsfield[body] = 700.0
        marrow = ndimage.binary_erosion(body, iterations=2)
        hounsfield[marrow] = rng.normal(200.0, 60.0, marrow.sum())
        bodies[level] = body
    aorta = tube(shape, (47.0, 23.0), 12.0)  # its wall touches the bodies' cortex front-left
    assert np.any(ndimage.binary_dilation(aorta, iterations=2) & bodies[17])
    hounsfield[aorta] = noisy(shape, 350.0, 15.0, seed=2)[aorta]
    labels = np.zeros(shape, np.uint8)
    for level, body in bodies.items():
        core = ndimage.binary_erosion(body, iterations=4)
        labels[core] = level
        # The network's outline reached into the aorta next to each body.
        labels[aorta & ndimage.binary_dilation(body, iterations=6)] = level
    probability = np.where(labels > 0, 0.9, 0.0).astype(np.float32)

    divided, bone = divide_bone(labels, probability, hounsfield, SPACING, superior_axis=2)

    assert not divided[aorta].any()
    assert not bone[aorta].any()
    for level, body in bodies.items():
        assert (divided[body] == level).mean() > 0.97, level


def test_a_long_smooth_bright_tube_is_a_lumen_only_without_a_brighter_shell():
    """The same tube of smooth 300 HU, 60 mm long: without a shell it is a vessel (lumen and its blurred edge);
    enclosed by a 2 mm cortex of 900 HU (a long bone's marrow) it is not."""
    shape = (50, 50, 70)
    hounsfield = noisy(shape, 40.0, 10.0)
    inside = tube(shape, (25.0, 25.0), 12.0)
    inside[..., :5] = inside[..., 65:] = False
    hounsfield[inside] = noisy(shape, 300.0, 15.0, seed=3)[inside]
    vessel = contrast_lumen(hounsfield, SPACING, superior_axis=2)
    assert vessel[inside].mean() > 0.97
    assert not vessel[~ndimage.binary_dilation(inside, iterations=6)].any()  # the soft tissue beyond its edge

    shell = ndimage.binary_dilation(inside, iterations=2) & ~inside
    hounsfield[shell] = 900.0
    assert not contrast_lumen(hounsfield, SPACING, superior_axis=2).any()


def test_smooth_bright_marrow_of_one_body_is_no_lumen():
    """A body whose marrow is as smooth and bright as contrast blood (300 +- 15 HU) and whose cortex is hardly
    brighter (350 HU): too short to be a vessel (it stops at the discs, 80 HU), so it stays bone."""
    shape = (50, 50, 70)
    hounsfield = noisy(shape, 40.0, 10.0)
    body = tube(shape, (25.0, 25.0), 14.0)
    body[..., :26] = body[..., 50:] = False
    hounsfield[body] = 350.0
    marrow = ndimage.binary_erosion(body, iterations=2)
    hounsfield[marrow] = noisy(shape, 300.0, 15.0, seed=4)[marrow]
    assert not contrast_lumen(hounsfield, SPACING, superior_axis=2).any()


def test_calcified_plaque_in_the_wall_leaves_the_aorta_a_lumen():
    """An aorta (350 HU) with spots of calcified plaque (800 HU) on a sixth of its wall is still a lumen; the
    plaque itself, brighter than the blood, is not part of it."""
    shape = (60, 60, 70)
    hounsfield = noisy(shape, 40.0, 10.0)
    aorta = tube(shape, (30.0, 30.0), 12.0)
    hounsfield[aorta] = noisy(shape, 350.0, 15.0, seed=5)[aorta]
    wall = ndimage.binary_dilation(aorta, iterations=2) & ~aorta
    i, j = np.nonzero(wall[..., 0])
    plaque = np.zeros(shape, bool)
    angle = np.arctan2(j - 30.0, i - 30.0)
    spots = np.abs(angle) < np.pi / 6
    plaque[i[spots], j[spots], 10:20] = plaque[i[spots], j[spots], 40:50] = True
    hounsfield[plaque] = 800.0
    vessel = contrast_lumen(hounsfield, SPACING, superior_axis=2)
    assert vessel[ndimage.binary_erosion(aorta, iterations=2)].all()
    assert not vessel[plaque].any()


def test_thick_slices_see_the_column_of_bodies_as_bone_and_the_aorta_as_a_lumen():
    """On 1 x 1 x 5 mm voxels, a column of four bodies whose every slice is even in plane (endplate slices of
    350 HU, marrow slices of 200 HU, disc slices of 150 HU where the endplates' partial volume lifts them, a cortex
    hardly brighter): a window one slice deep sees no variation along the column and took all 100 mm of it for a
    vessel (the L2 and L3 of the real CT's 1 x 1 x 5 mm copy lost their marrow to 77-80 % of their volume). The
    window now spans three slices and sees the endplates, while the aorta beside the column stays a lumen."""
    spacing = (1.0, 1.0, 5.0)
    shape = (60, 60, 20)
    hounsfield = noisy(shape, 40.0, 10.0)
    column = tube(shape, (22.0, 30.0), 13.0)
    hounsfield[column] = 280.0
    marrow = ndimage.binary_erosion(column, iterations=2)
    slice_hu = np.tile([150.0, 350.0, 200.0, 200.0, 350.0], 4)  # disc, endplate, marrow, marrow, endplate
    hounsfield[marrow] = (slice_hu[None, None, :] + np.random.default_rng(6).normal(0.0, 10.0, shape))[marrow]
    aorta = tube(shape, (48.0, 30.0), 9.0)
    hounsfield[aorta] = noisy(shape, 350.0, 15.0, seed=7)[aorta]

    lumen = contrast_lumen(hounsfield, spacing, superior_axis=2)

    assert not lumen[marrow].any()
    assert lumen[ndimage.binary_erosion(aorta, iterations=2)].all()
