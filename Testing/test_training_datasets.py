"""Data set readers on small trees built here, each with a clear error on a broken tree; the subject split."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.io import write_volume
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.phantoms.mri import make_mri_phantom
from spineseg.training.config import DataConfig, Layout, Task
from spineseg.training.datasets import (read_bids_discs, read_dataset, read_pairs, read_verse, save_split,
                                        split_subjects, check_split)
from spineseg.training.tasks.discs import slab_sample_from_files
from spineseg.training.tasks.vertebrae import case_from_files
from spineseg.volume import Volume, VolumeKind


def touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def verse_tree(root):
    touch(root, "rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz", "rawdata/sub-gl003/sub-gl003_dir-sag_ct.nii.gz",
          "rawdata/sub-verse004/sub-verse004_ct.nii.gz",
          "derivatives/sub-gl003/sub-gl003_dir-ax_seg-vert_msk.nii.gz",
          "derivatives/sub-gl003/sub-gl003_dir-sag_seg-vert_msk.nii.gz",
          "derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz")
    return root


def test_verse_layout_pairs_scans_with_masks_and_splits_by_subject(tmp_path):
    subjects = read_verse(verse_tree(tmp_path))
    assert [(s.subject, s.case) for s in subjects] == [
        ("sub-gl003", "sub-gl003_dir-ax"), ("sub-gl003", "sub-gl003_dir-sag"), ("sub-verse004", "sub-verse004")]
    assert subjects[0].labels.name == "sub-gl003_dir-ax_seg-vert_msk.nii.gz"
    train, validation = split_subjects(subjects, 0.5, seed=0)
    assert len({s.subject for s in validation}) == 1
    assert not {s.subject for s in train} & {s.subject for s in validation}  # both gl003 scans on one side
    split = read_dataset(Task.VERTEBRAE, DataConfig(path=str(tmp_path), validation_fraction=0.5), seed=0)
    assert split.layout is Layout.VERSE and len(split.train) + len(split.validation) == 3
    save_split(split, tmp_path / "split.json")
    check_split(split, tmp_path / "split.json")  # the same data resume
    touch(tmp_path, "rawdata/sub-verse005/sub-verse005_ct.nii.gz",
          "derivatives/sub-verse005/sub-verse005_seg-vert_msk.nii.gz")
    changed = read_dataset(Task.VERTEBRAE, DataConfig(path=str(tmp_path), validation_fraction=0.5), seed=0)
    with pytest.raises(InputError, match="data differ from those recorded"):
        check_split(changed, tmp_path / "split.json")


def test_verse_errors_name_what_is_missing(tmp_path):
    verse_tree(tmp_path)
    (tmp_path / "derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz").unlink()
    touch(tmp_path, "derivatives/sub-x/sub-x_seg-vert_msk.nii.gz")
    with pytest.raises(InputError) as error:
        read_verse(tmp_path)
    assert "sub-verse004_seg-vert_msk.nii.gz" in str(error.value) and "sub-x_ct.nii.gz" in str(error.value)
    with pytest.raises(InputError, match="rawdata is missing.*VerSe layout"):
        read_verse(tmp_path / "derivatives")


def test_image_label_pairs_match_by_name_like_csi2014(tmp_path):
    touch(tmp_path, "images/case1.nii.gz", "images/case2.mha", "labels/case1_label.nii.gz", "labels/case2.mha")
    subjects = read_pairs(tmp_path)
    assert [(s.case, s.labels.name) for s in subjects] == [("case1", "case1_label.nii.gz"), ("case2", "case2.mha")]
    touch(tmp_path, "images/case3.nii.gz", "labels/case9.nii.gz")
    with pytest.raises(InputError, match=r"image\(s\) without a label file \(case3.nii.gz.*without an image \(case9"):
        read_pairs(tmp_path)
    with pytest.raises(InputError, match="cannot tell the layout"):
        read_dataset(Task.VERTEBRAE, DataConfig(path=str(tmp_path / "images")), seed=0)


def test_bids_discs_skip_unlabelled_images_and_refuse_orphan_labels(tmp_path):
    touch(tmp_path, "sub-amu01/anat/sub-amu01_T1w.nii.gz", "sub-amu01/anat/sub-amu01_T2w.nii.gz",
          "sub-amu02/anat/sub-amu02_T2w.nii.gz",
          "derivatives/labels/sub-amu01/anat/sub-amu01_T2w_labels-disc-manual.nii.gz",
          "derivatives/labels/sub-amu02/anat/sub-amu02_T2w_labels-disc-manual.nii.gz")
    subjects = read_bids_discs(tmp_path)
    assert [(s.subject, s.contrast) for s in subjects] == [("sub-amu01", "T2w"), ("sub-amu02", "T2w")]
    assert read_dataset(Task.DISCS, DataConfig(path=str(tmp_path)), seed=0).layout is Layout.BIDS
    touch(tmp_path, "derivatives/labels/sub-amu03/anat/sub-amu03_T1w_labels-disc-manual.nii.gz")
    with pytest.raises(InputError, match=r"without their image \(sub-amu03_T1w_labels-disc-manual.nii.gz\)"):
        read_bids_discs(tmp_path)


def test_a_single_subject_trains_without_validation_and_says_so(caplog):
    from spineseg.training.datasets import Subject

    cases = [Subject("a", "a"), Subject("a", "a2")]
    train, validation = split_subjects(cases, 0.2, seed=0)
    assert train == cases and validation == []
    assert "no validation split" in caplog.text and "data.validation_fraction=0" in caplog.text


def test_a_ct_and_its_label_map_become_a_training_case(tmp_path):
    phantom = make_ct_phantom([20, 21, 22], spacing=(4.0, 4.0, 4.0), orientation="LPS", seed=3, field_of_view_cut=False)
    write_volume(phantom.image, tmp_path / "ct.nii.gz")
    write_volume(phantom.labels, tmp_path / "labels.nii.gz")
    case = case_from_files(tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz", 6.0)
    assert case.levels == [20, 21, 22] and case.image.shape == case.labels.shape
    broken = phantom.labels.array.copy()
    broken[0, 0, 0] = 31
    write_volume(phantom.labels.with_array(broken), tmp_path / "broken.nii.gz")
    with pytest.raises(InputError, match=r"broken.nii.gz must hold vertebrae in VerSe numbering.*\[31\]"):
        case_from_files(tmp_path / "ct.nii.gz", tmp_path / "broken.nii.gz", 6.0)


def test_disc_point_labels_become_slab_points(tmp_path):
    phantom = make_mri_phantom("lumbar", contrast="T2", orientation="PIR", spacing=(1.3, 1.3, 3.5), seed=2)
    image = phantom.image
    labels = np.zeros(image.shape, dtype=np.uint8)
    for number, ras in phantom.disc_points.items():
        labels[tuple(np.round(image.ras_to_ijk(ras)[0]).astype(int))] = number
    write_volume(image, tmp_path / "t2.nii.gz")
    write_volume(Volume(labels, image.affine, VolumeKind.LABEL), tmp_path / "discs.nii.gz")
    sample = slab_sample_from_files(tmp_path / "t2.nii.gz", tmp_path / "discs.nii.gz", 128, "T2w")
    assert set(sample.points) == set(phantom.disc_points)
    for number, ras in sample.truth_ras.items():
        assert np.linalg.norm(ras - phantom.disc_points[number]) < 3.0  # within one voxel
    write_volume(Volume(np.zeros_like(labels), image.affine, VolumeKind.LABEL), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="empty.nii.gz holds no disc label"):
        slab_sample_from_files(tmp_path / "t2.nii.gz", tmp_path / "empty.nii.gz", 128)
