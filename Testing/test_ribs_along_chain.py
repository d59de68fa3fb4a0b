"""Rib anchors read along the chain of vertebrae (issue 28, item 4: names from the frame).

Each rib is read where it leaves the spine, in the slab between two disc planes that holds its root; the count
of ribs between the first and the last must fit the number of slabs between them. The disc planes here are the
phantoms' own (their layout), so that these tests judge the rib reading alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from spineseg.labels import vertebra_name
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.vertebrae.anchors import (RIB_BONE_HU, RIB_ROOT_MM, Anchor, RibReading,
                                        read_ribs_along_chain)
from spineseg.vertebrae.body_chain import regroup_at_discs, slab_and_distance
from spineseg.vertebrae.frame import find_spine_frame
from spineseg.vertebrae.pipeline import UNANCHORED_WARNING, _naming_warnings, chain_naming
from spineseg.vertebrae.levels import name_run
from spineseg.volume import Volume, VolumeKind
from test_body_chain import true_planes


def slab_names(phantom, planes) -> dict[int, int]:
    """Each slab's vertebra in the phantom's labels (the level holding most of its voxels)."""
    where = np.argwhere(phantom.labels.array > 0)
    slabs = slab_and_distance(phantom.image.ijk_to_ras(where), planes)[0]
    levels = phantom.labels.array[tuple(where.T)]
    return {int(s): int(np.bincount(levels[slabs == s]).argmax()) for s in np.unique(slabs)}


@pytest.fixture(scope="module")
def thoracic_crop():
    """C6-L2: the sacrum and the lumbar spine below L2 cut off; C7 without ribs above T1, between two discs."""
    phantom = make_ct_phantom(list(range(6, 22)), spacing=1.5, seed=11, field_of_view_cut=False)
    return phantom, find_spine_frame(phantom.image).canal, true_planes(phantom)


def test_a_thoracic_crop_without_its_sacrum_is_named_right_from_its_ribs(thoracic_crop):
    """Twelve ribs a side, from T1 (C7 above without) to T12 (L1 below without): both anchors agree with the count,
    and pieces the walk named two levels too high are named right by the chain."""
    phantom, canal, planes = thoracic_crop
    truth = slab_names(phantom, planes)
    reading = read_ribs_along_chain(phantom.image, canal, planes)
    anchors, problem = reading.judge()
    assert problem is None
    assert {anchor: vertebra_name(truth[slab]) for anchor, slab in anchors.items()} == {
        Anchor.FIRST_RIB: "T1", Anchor.LAST_RIB: "T12"}
    assert len(reading.right) == len(reading.left) == 12
    wrong = np.where(phantom.labels.array > 0, phantom.labels.array + 2, 0).astype(np.uint8)
    seeds, _, first = regroup_at_discs(wrong, wrong > 0, phantom.image.array.astype(np.float32),
                                       phantom.image.affine, planes, canal, slab_level=reading.slab_level())
    seeded = seeds > 0
    assert (seeds[seeded] == phantom.labels.array[seeded]).mean() > 0.95
    assert {slab: first + slab for slab in range(1, len(planes))} == {s: truth[s] for s in range(1, len(planes))}


def bridge(image: np.ndarray, start: np.ndarray, stop: np.ndarray, radius_voxels: float, hounsfield: float) -> None:
    """Paint a rod of bone from voxel ``start`` to ``stop``, in place."""
    for t in np.linspace(0.0, 1.0, 40):
        centre = start + t * (stop - start)
        low = np.floor(centre - radius_voxels).astype(int)
        grid = np.indices((int(2 * radius_voxels) + 2,) * 3).reshape(3, -1).T + low
        grid = grid[np.linalg.norm(grid - centre, axis=1) <= radius_voxels]
        image[tuple(grid.T)] = hounsfield


def test_a_transverse_process_touching_a_rib_is_not_taken_for_a_rib():
    """L1's right transverse process is joined by a thin bar of bone to the twelfth rib (the fault that made L2
    read as rib-bearing on the chest CT): the rib stays T12's, L1 stays rib-free, the last rib is T12."""
    phantom = make_ct_phantom(list(range(17, 23)), spacing=1.5, seed=5, field_of_view_cut=False)
    canal = find_spine_frame(phantom.image).canal
    planes = true_planes(phantom)
    labels, image = phantom.labels.array, phantom.image.array.astype(np.float32)
    ras_of = phantom.image.ijk_to_ras

    def across(voxels: np.ndarray) -> np.ndarray:  # towards the right of the canal's centre, mm
        ras = ras_of(voxels)
        order = np.argsort(canal[:, 2])
        return ras[:, 0] - np.interp(ras[:, 2], canal[order, 2], canal[order, 0])

    l1 = np.argwhere(labels == 20)
    tip = l1[np.argmax(across(l1))]
    assert RIB_ROOT_MM[0] < across(tip[None])[0] < RIB_ROOT_MM[1]  # the process reaches the band of rib roots
    rib = np.argwhere((image > 300) & (labels == 0))
    rib = rib[(across(rib) > 40.0) & (across(rib) < 50.0)]
    target = rib[np.argmin(np.linalg.norm(ras_of(rib) - ras_of(tip), axis=1))]
    truth = slab_names(phantom, planes)
    assert truth[int(slab_and_distance(ras_of(target), planes)[0][0])] == 19  # the twelfth rib
    bridge(image, tip.astype(float), target.astype(float), 1.0, 700.0)
    joined, _ = ndimage.label(image >= RIB_BONE_HU)
    assert joined[tuple(tip)] == joined[tuple(target)]  # one piece of bone from L1 out along the rib
    touched = Volume(image, phantom.image.affine, VolumeKind.INTENSITY)
    reading = read_ribs_along_chain(touched, canal, planes)
    anchors, problem = reading.judge()
    l1_slab = next(slab for slab, level in truth.items() if level == 20)
    assert problem is None and l1_slab not in reading.right
    assert truth[anchors[Anchor.LAST_RIB]] == 19


@pytest.mark.parametrize("right, left, anchors, problem", [
    ((2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13), (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13),  # a first rib lost on one side
     {Anchor.FIRST_RIB: 2, Anchor.LAST_RIB: 13}, None),
    ((2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13), (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14), {},
     "the sides disagree on the first and the last rib"),
    ((2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), {},  # eleven ribs
     "the ribs between the first and the last are not twelve"),
    ((0, 1, 2), (0, 1, 3), {}, "on the left: ribs, then none, then ribs again"),
    ((0, 1, 6), (0, 1), {Anchor.LAST_RIB: 1}, None),  # an iliac crest five slabs below the last rib
    ((0, 1), (0, 2), {}, "on the left: ribs, then none, then ribs again"),
    ((5,), (), {}, None),  # one slab with rib-free ones above: not a rib (an iliac crest)
    ((0,), (), {Anchor.LAST_RIB: 0}, None),  # one slab at the scan's head end: the run's cut end
])
def test_rib_readings_that_contradict_each_other_or_the_count_give_no_anchor(right, left, anchors, problem):
    reading = RibReading(right, left, (0, 16))
    assert reading.judge() == (anchors, problem)
    assert (reading.slab_level() is None) == (not anchors)


def test_a_chain_whose_ribs_contradict_each_other_is_reported_unanchored():
    """Pieces named by a last rib read on them, a chain whose ribs contradict each other: the names are
    reported as unanchored, with why."""
    naming = name_run([16.0, 17.0, 18.0, 19.0, 20.0], anchors={Anchor.LAST_RIB: 2})
    assert naming.anchor is Anchor.LAST_RIB
    reading = RibReading((0, 1, 2), (0, 2), (0, 6))
    record = chain_naming(naming, reading, naming.levels[0], {level: level for level in naming.levels}, False)
    assert not record.anchored and record.anchors_found == {}
    warnings = _naming_warnings(record, True, reading.judge()[1])
    assert warnings == [UNANCHORED_WARNING, "The ribs read along the spine contradict each other (on the left: "
                        "ribs, then none, then ribs again); no rib anchor was used."]
