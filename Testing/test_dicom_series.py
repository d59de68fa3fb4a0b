"""DICOM folders: the task's modality is chosen, ambiguity is refused with a list, uneven slices are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.cli import main
from spineseg.errors import EXIT_INPUT, InputError
from spineseg.io import list_dicom_series, read_volume


def write_series(folder: Path, uid: str, modality: str, slices: int, spacing: float = 2.0,
                 skip: int | None = None, description: str = "") -> None:
    """A tiny axial series (8 x 8 pixels per slice) written slice by slice with its DICOM tags."""
    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(slices):
        if index == skip:
            continue
        value = -1000 if modality == "CT" else 100
        image = sitk.GetImageFromArray(np.full((1, 8, 8), value + 10 * index, np.int16))
        image.SetSpacing((1.0, 1.0, spacing))
        for key, tag in (("0008|0060", modality), ("0020|000e", uid), ("0008|103e", description),
                         ("0020|000d", "1.2.3"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                         ("0020|0032", f"0\\0\\{index * spacing}"), ("0020|0013", str(index + 1)),
                         ("0008|0018", f"{uid}.{index + 1}"), ("0028|0030", "1\\1")):
            image.SetMetaData(key, tag)
        writer.SetFileName(str(folder / f"{modality}-{uid}-{index:03d}.dcm"))
        writer.Execute(image)


def test_a_ct_beside_a_larger_mr_series_is_read_for_vertebrae_and_the_mr_for_discs(tmp_path):
    write_series(tmp_path, "1.2.3.1", "CT", 8, description="CT spine")
    write_series(tmp_path, "1.2.3.2", "MR", 12, description="T2 sagittal")
    assert sorted((s.uid, s.modality, len(s.files)) for s in list_dicom_series(tmp_path)) == [
        ("1.2.3.1", "CT", 8), ("1.2.3.2", "MR", 12)]
    assert read_volume(tmp_path, modality="CT").shape == (8, 8, 8)
    assert read_volume(tmp_path, modality="MR").shape == (8, 8, 12)


def test_two_ct_series_are_listed_and_one_can_be_picked(tmp_path, capsys):
    write_series(tmp_path, "1.2.3.1", "CT", 8, description="bone kernel")
    write_series(tmp_path, "1.2.3.2", "CT", 9, description="soft kernel")
    write_series(tmp_path, "1.2.3.3", "CT", 1, description="scout")  # a localiser does not count
    assert main(["vertebrae", str(tmp_path), "-o", str(tmp_path / "out")]) == EXIT_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--series UID" in lines[0], lines
    for words in ("1.2.3.1 (CT, 'bone kernel', 8 slices)", "1.2.3.2 (CT, 'soft kernel', 9 slices)"):
        assert words in lines[0]
    assert read_volume(tmp_path, modality="CT", series="1.2.3.2").shape == (8, 8, 9)
    with pytest.raises(InputError, match="holds no series 9.9"):
        read_volume(tmp_path, modality="CT", series="9.9")
    assert not (tmp_path / "out").exists()


def test_a_missing_slice_is_refused(tmp_path):
    write_series(tmp_path, "1.2.3.1", "CT", 10, skip=4)
    with pytest.raises(InputError, match=r"unevenly spaced \(2.00 to 4.00 mm"):
        read_volume(tmp_path, modality="CT")
