"""Naming by anatomical anchors: the sacrum, the last rib, C7/T1 and C2 fix the count; T13 and L6 when they demand."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.anatomy import L6, SACRUM, T13, level_to_position
from spineseg.geometry import resample_to, working_grid
from spineseg.labels import vertebra_name
from spineseg.perturbation import Perturbation, perturbed_volume
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.results import NamingRecord
from spineseg.vertebrae.anchors import CLEAR_PELVIS_SHARE, Anchor, AnchorFindings, find_anchors, slab_ranges
from spineseg.vertebrae.levels import name_run
from spineseg.vertebrae.pipeline import UNANCHORED_WARNING, _naming_warnings, naming_record
from spineseg.vertebrae.traversal import FoundVertebra
from spineseg.volume import Volume, VolumeKind


def names(levels: list[int]) -> list[str]:
    return [vertebra_name(level) for level in levels]


def shifted(levels: list[int], by: float) -> list[float]:
    """Regressed positions of a run, all ``by`` positions too far towards the head (as on the real CT)."""
    return [level_to_position(level) - by if level in (*range(1, 25), SACRUM) else level_to_position(24) - by
            for level in levels]


def test_the_sacrum_corrects_a_run_regressed_two_levels_too_high():
    truth = [19, 20, 21, 22, 23, 24, SACRUM]
    alone = name_run(shifted(truth, 2.0))
    assert names(alone.levels) == ["T10", "T11", "T12", "L1", "L2", "L3", "L4"] and not alone.anchored
    naming = name_run(shifted(truth, 2.0), anchors={Anchor.SACRUM: 6})
    assert names(naming.levels) == ["T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    assert naming.anchor is Anchor.SACRUM and naming.renamed == 7


def test_the_last_rib_corrects_a_shift_without_the_sacrum():
    truth = list(range(15, 23))  # T8..L3
    naming = name_run(shifted(truth, -3.0), anchors={Anchor.LAST_RIB: 4})
    assert names(naming.levels) == ["T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3"]
    assert naming.anchor is Anchor.LAST_RIB


def test_six_vertebrae_without_ribs_above_the_sacrum_are_named_with_an_l6():
    # T12, then six vertebrae without ribs, then the sacrum: an L6, not a T11 on the last rib.
    regressed = shifted([19, 20, 21, 22, 23, 24, 24, SACRUM], 1.0)
    naming = name_run(regressed, anchors={Anchor.SACRUM: 7, Anchor.LAST_RIB: 0})
    assert names(naming.levels) == ["T12", "L1", "L2", "L3", "L4", "L5", "L6", "sacrum"]
    assert naming.variant == L6 and naming.followed == [Anchor.SACRUM, Anchor.LAST_RIB]
    # Without the last rib the sacrum alone names five lumbar vertebrae and no variant.
    assert names(name_run(regressed, anchors={Anchor.SACRUM: 7}).levels)[0] == "T11"


def test_thirteen_rib_bearing_vertebrae_are_named_with_a_t13():
    # C7, thirteen vertebrae with ribs, L1: the first and last ribs demand a T13.
    regressed = [7.0, *range(8, 21), 20.0]
    naming = name_run(regressed, anchors={Anchor.FIRST_RIB: 1, Anchor.LAST_RIB: 13})
    assert names(naming.levels) == ["C7", *[f"T{n}" for n in range(1, 14)], "L1"]
    assert naming.variant == T13 and naming_record(naming).summary() == "named by the last rib (on T13), with a T13"


def test_the_sacrum_overrules_a_last_rib_that_disagrees_and_says_so():
    truth = [19, 20, 21, 22, 23, 24, SACRUM]
    naming = name_run(shifted(truth, 0.0), anchors={Anchor.SACRUM: 6, Anchor.LAST_RIB: 2})
    assert names(naming.levels) == ["T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    record = naming_record(naming)
    assert record.overruled == ["last rib"] and record.anchors_found == {"sacrum": "sacrum", "last rib": "L2"}
    assert _naming_warnings(record, True) == [
        "The last rib (on L2) disagrees with the sacrum; the names follow the sacrum."]


def test_a_rib_anchor_far_from_the_network_s_estimate_is_not_believed_and_says_so():
    # A lumbar run whose sacrum was not recognised: the ilium beside L5 reads as ribs below rib-free
    # vertebrae, a "C7/T1" fifteen levels from the network's estimate.
    truth = [20, 21, 22, 23, 24, SACRUM]
    naming = name_run(shifted(truth, 0.0), anchors={Anchor.FIRST_RIB: 4})
    assert names(naming.levels) == ["L1", "L2", "L3", "L4", "L5", "sacrum"] and not naming.anchored
    record = naming_record(naming)
    assert record.overruled == ["C7/T1"] and record.anchors_found == {"C7/T1": "L5"}
    assert _naming_warnings(record, True) == [UNANCHORED_WARNING, (
        "The C7/T1 (on L5) is too far from the network's estimate of the levels to be believed; it was not used.")]
    # An anchor within reach of the estimate is followed.
    near = name_run(shifted(list(range(1, 7)), -3.0), anchors={Anchor.FIRST_RIB: 4})
    assert near.anchor is Anchor.FIRST_RIB


def test_a_run_without_anchors_is_reported_as_unanchored():
    record = naming_record(name_run([20.1, 21.0, 21.9]))
    assert not record.anchored and record.to_dict() == {
        "anchored": False, "anchor": None, "anchors_found": {}, "overruled": [], "variant": None, "renamed": 0}
    assert record.summary() == "unanchored: names from the network's estimates only"
    assert _naming_warnings(record, True) == [UNANCHORED_WARNING]
    assert NamingRecord.from_dict(record.to_dict()) == record


def test_an_anchor_off_the_run_is_refused():
    with pytest.raises(ValueError, match="anchors must mark pieces"):
        name_run([20.0, 21.0], anchors={Anchor.SACRUM: 2})


def pieces_from_labels(
    levels: list[int], seed: int, change: Perturbation | None = None,
) -> tuple[np.ndarray, list[FoundVertebra], list[int]]:
    """A phantom on the 3 mm working grid (HU) and its vertebrae as found pieces (exact masks), head to foot;
    ``change`` resizes the anatomy and scales its values above 0 HU first (see :func:`perturbed_volume`)."""
    phantom = make_ct_phantom(levels, seed=seed, spacing=(1.5, 1.5, 1.5))
    values = Volume(phantom.image.array.astype(np.float32), phantom.image.affine, VolumeKind.INTENSITY)
    image, _ = perturbed_volume(values, change or Perturbation("as it is"))
    grid = working_grid(image, 3.0)
    hounsfield = resample_to(image, grid, fill_value=-1000.0).array
    labels = resample_to(Volume(phantom.labels.array, image.affine, VolumeKind.LABEL), grid).array
    found, present = [], []
    for level in levels:
        voxels = np.argwhere(labels == level)
        if len(voxels) < 20:
            continue
        low, high = voxels.min(axis=0), voxels.max(axis=0) + 1
        mask = labels[low[0]:high[0], low[1]:high[1], low[2]:high[2]] == level
        found.append(FoundVertebra(low, mask.astype(np.float16), len(voxels), 1.0, 0.0, voxels.mean(axis=0)))
        present.append(level)
    return hounsfield, found, present


@pytest.mark.parametrize("levels, seed, expected", [
    ([*range(17, 25), SACRUM], 1000, {"sacrum": "sacrum", "last rib": "T12"}),
    (list(range(3, 12)), 1003, {"C7/T1": "T1"}),
    (list(range(1, 9)), 2001, {"C2": "C2"}),  # T1 alone below C7: one rib reading is too few for C7/T1
    (list(range(10, 20)), 2004, {}),
])
def test_anchors_found_in_the_phantom_anatomy_name_a_shifted_run(levels, seed, expected):
    """Ribs, iliac wings and the dens of a phantom, seen around its vertebrae on the working grid, name a run
    whose regressed positions are two levels too high; a run of thoracic vertebrae alone has no anchor."""
    hounsfield, found, present = pieces_from_labels(levels, seed)
    findings, _ = find_anchors(hounsfield, found, 3.0)
    naming = name_run(shifted(present, 2.0), anchors=findings.anchors())
    record = naming_record(naming)
    assert record.anchors_found == expected
    if expected:
        assert names(naming.levels) == names(present)
    else:
        assert not record.anchored


def test_rib_readings_that_break_the_thoracic_run_give_no_rib_anchor():
    """Ribs, none, ribs again (an iliac crest read as a rib, a rib missed): the readings contradict the anatomy,
    so neither the last rib nor C7/T1 names the run; a clean run gives both."""

    clean = AnchorFindings([False, False, True, True, True, False, False])
    assert clean.anchors() == {Anchor.FIRST_RIB: 2, Anchor.LAST_RIB: 4}
    # one reading above the ribs (a vertebra the scan's head end may cut) is too little to fix the count,
    assert AnchorFindings([False, True, True, True]).anchors() == {}
    # but the run's last piece without ribs below two with ribs is a last rib (its upper part is in view)
    assert AnchorFindings([True, True, True, False]).anchors() == {Anchor.LAST_RIB: 2}
    assert AnchorFindings([True, True, False, True]).anchors() == {}
    broken = AnchorFindings([True, True, False, False, False, True, True])
    assert broken.anchors() == {}
    assert AnchorFindings([None, True, True, False, False, None], sacrum=5).anchors() == {
        Anchor.SACRUM: 5, Anchor.LAST_RIB: 2}


def test_a_dens_with_ribs_right_below_it_is_not_c2():

    assert Anchor.C2 not in AnchorFindings([False, False, True, True, True], dens=1).anchors()
    neck = AnchorFindings([None, False, False, False, False, False, False, True, True], dens=1)
    assert neck.anchors()[Anchor.C2] == 1 and neck.anchors()[Anchor.FIRST_RIB] == 7


def test_a_run_without_pieces_has_no_anchor():
    findings, anatomy = find_anchors(np.zeros((8, 8, 8), np.float32), [], 3.0)
    assert findings.anchors() == {} and anatomy == []


def test_a_sacrum_found_in_three_pieces_is_read_from_its_head_piece_past_the_lower_sacrum():
    """The walk may return the sacrum as its top (with the wings), its middle and a small foot-end piece below
    the sacro-iliac joints that touches no wing; the sacrum is still the head piece."""
    hounsfield, found, present = pieces_from_labels([*range(21, 25), SACRUM], 1000)
    sacrum = found[-1]
    mask = sacrum.probability > 0.5
    rows = np.flatnonzero(mask.any(axis=(0, 1)))  # k grows towards the head
    cuts = [rows[0], rows[0] + len(rows) // 8, rows[0] + len(rows) // 2, rows[-1] + 1]
    pieces = []
    for low, high in zip(cuts[-2::-1], cuts[:0:-1]):  # head to foot
        part = np.zeros_like(mask)
        part[:, :, low:high] = mask[:, :, low:high]
        voxels = np.argwhere(part) + sacrum.corner
        pieces.append(FoundVertebra(sacrum.corner, part.astype(np.float16), len(voxels), 1.0, 0.0, voxels.mean(axis=0)))
    findings, anatomy = find_anchors(hounsfield, found[:-1] + pieces, 3.0)
    assert anatomy[-1].pelvis_share == 0  # the foot-end piece touches no wing
    assert anatomy[-3].pelvis_share >= CLEAR_PELVIS_SHARE  # the head piece, unmistakably joined to the wings
    assert findings.sacrum == len(found) - 1


def l5_holding_the_top_of_s1(hounsfield: np.ndarray, found: list[FoundVertebra]) -> list[FoundVertebra]:
    """``found`` (ending L5, sacrum) with the top quarter of the sacrum's rows (its first 15 mm) moved into L5's
    piece."""
    l5, sacrum = found[-2], found[-1]
    s1 = sacrum.probability > 0.5
    rows = np.flatnonzero(s1.any(axis=(0, 1)))  # k grows towards the head
    taken = np.zeros_like(s1)
    taken[:, :, rows[-1] + 1 - round(0.25 * len(rows)):] = True
    taken &= s1
    voxels = np.vstack([np.argwhere(l5.probability > 0.5) + l5.corner, np.argwhere(taken) + sacrum.corner])
    low = voxels.min(axis=0)
    mask = np.zeros(tuple(voxels.max(axis=0) + 1 - low), dtype=bool)
    mask[tuple((voxels - low).T)] = True
    reaching_l5 = FoundVertebra(low, mask.astype(np.float16), len(voxels), 1.0, 0.0, voxels.mean(axis=0))
    rest = np.argwhere(s1 & ~taken) + sacrum.corner
    lower_sacrum = FoundVertebra(sacrum.corner, (s1 & ~taken).astype(np.float16), len(rest), 1.0, 0.0,
                                 rest.mean(axis=0))
    return found[:-2] + [reaching_l5, lower_sacrum]


def test_an_l5_holding_the_top_of_s1_is_not_taken_for_the_sacrum():
    """On the real CT 8 % smaller the walk's L5 held the top of S1, whose slices touch the iliac wings. The wings
    are read in the head-most vertebra's height of each piece's slab: there that piece is L5 alone."""
    hounsfield, found, present = pieces_from_labels([*range(21, 25), SACRUM], 1000)
    findings, anatomy = find_anchors(hounsfield, l5_holding_the_top_of_s1(hounsfield, found), 3.0)
    assert not anatomy[-2].pelvis and anatomy[-1].pelvis
    assert findings.sacrum == len(found) - 1
    naming = name_run(shifted(present, 2.0), anchors=findings.anchors())
    assert names(naming.levels) == names(present)


def test_an_l5_deep_between_the_iliac_crests_is_not_taken_for_the_sacrum():
    """An L5 whose bone touches high iliac crests over most of its height reads as joined to the wings, but in a
    smaller share of its slices than the sacrum below it: the upper of the two is L5."""
    hounsfield, found, present = pieces_from_labels([*range(21, 25), SACRUM], 1000)
    slab = slab_ranges(found, hounsfield.shape[2])[-2]
    voxels = np.argwhere(found[-2].probability > 0.5) + found[-2].corner
    midline, front = voxels[:, :2].mean(axis=0).round().astype(int)
    reach = round(75.0 / 3.0)  # a bar of bone 75 mm out to each side in the head-most 70 % of its slices
    crests = hounsfield.copy()
    crests[midline - reach:midline + reach + 1, front, slab[-round(0.7 * len(slab)):]] = 400.0
    findings, anatomy = find_anchors(crests, found, 3.0)
    assert anatomy[-2].pelvis and anatomy[-1].pelvis
    assert anatomy[-2].pelvis_share < anatomy[-1].pelvis_share
    assert findings.sacrum == len(found) - 1


def as_on_the_real_ct(hounsfield: np.ndarray, found: list[FoundVertebra], change: Perturbation) -> list[FoundVertebra]:
    """The phantom's sacrum as the walk finds it on the real 3 mm CT, in place: the piece's mask holds the sacrum's
    middle (within 25 mm of its midline) and the alae beside it, fatty marrow averaged with thin cortex, read 170 HU
    (the real sacrum piece's median) before ``change`` scales them."""
    sacrum = found[-1]
    mask = sacrum.probability > 0.5
    midline = np.argwhere(mask)[:, 0].mean()
    middle = mask & (np.abs(np.arange(mask.shape[0]) - midline) <= 25.0 / 3.0)[:, None, None]
    alae = tuple((np.argwhere(mask & ~middle) + sacrum.corner).T)
    hounsfield[alae] = np.minimum(hounsfield[alae], 170.0 * change.hounsfield_factor)
    voxels = np.argwhere(middle) + sacrum.corner
    return found[:-1] + [FoundVertebra(sacrum.corner, middle.astype(np.float16), len(voxels), 1.0, 0.0,
                                       voxels.mean(axis=0))]


@pytest.mark.parametrize("change", [
    Perturbation("as it is"), Perturbation("10 % smaller", scale=0.9), Perturbation("10 % larger", scale=1.1),
    Perturbation("bone 15 % darker", hounsfield_factor=0.85),
    Perturbation("bone 15 % brighter", hounsfield_factor=1.15),
    Perturbation("10 % smaller and 15 % darker", scale=0.9, hounsfield_factor=0.85),
], ids=lambda change: change.name)
def test_the_sacrum_is_found_whatever_the_patient_s_size_and_the_scan_s_brightness(change):
    """The sacrum anchor reads a share of the patient's own vertebra height, with bone relative to the scan's own
    vertebrae: a phantom whose sacrum reads as on the real CT is named from its sacrum alike when 10 % smaller or
    larger, or 15 % darker or brighter. (A fixed run of 12 mm at 150 HU read a run of 12 mm 15 % darker and lost
    the sacrum 10 % smaller and 15 % darker.)"""
    hounsfield, found, present = pieces_from_labels([*range(17, 25), SACRUM], 1000, change)
    found = as_on_the_real_ct(hounsfield, found, change)
    findings, anatomy = find_anchors(hounsfield, found, 3.0)
    assert anatomy[-1].pelvis and findings.sacrum == len(found) - 1
    naming = name_run(shifted(present, 2.0), anchors=findings.anchors())
    assert names(naming.levels) == names(present) and naming.anchor is Anchor.SACRUM
