"""Images that would give silently wrong results are refused (exit 2, one line) or warned about, everywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.checks import check_input
from spineseg.cli import main
from spineseg.errors import EXIT_INPUT, InputError
from spineseg.io import read_volume, write_volume
from spineseg.jobs import run_job
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.phantoms.mri import make_mri_phantom
from spineseg.vertebrae.pipeline import UNANCHORED_WARNING
from spineseg.volume import Volume, affine_from_geometry
from test_orientation_invariance import BoneComponentModel

EXTENSION = Path(__file__).resolve().parents[1] / "SpineSegExtension"
sys.path.insert(0, str(EXTENSION))

from SpineSegLib import batch  # noqa: E402
from SpineSegLib import process, storage  # noqa: E402


@pytest.fixture(scope="module")
def ct() -> Volume:
    return make_ct_phantom([20, 21], spacing=(3.0, 3.0, 3.0), seed=4, margin_mm=10.0).image


@pytest.fixture(scope="module")
def mri() -> Volume:
    return make_mri_phantom([20, 21, 22], spacing=(4.0, 2.0, 2.0)).image


def uint8_ct(ct: Volume) -> Volume:
    """The CT squeezed into 0-255 the way a screenshot-like export does."""
    return ct.with_array(np.clip((ct.array + 1000) / 8, 0, 255).astype(np.uint8))


def refusal(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 and exactly one line on stderr; return it."""
    assert main(argv) == EXIT_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spineseg: error:"), lines
    return lines[0]


@pytest.mark.parametrize("task, make, words", [
    ("vertebrae", lambda ct, mri: mri.with_array(mri.array * 1000), "does not look like a CT"),  # a scanner's scale
    ("vertebrae", lambda ct, mri: uint8_ct(ct), "does not look like a CT"),
    ("discs", lambda ct, mri: ct, "looks like a CT"),
])
def test_wrong_modality_is_refused_with_a_way_to_force_it(task, make, words, ct, mri, tmp_path, capsys):
    image = make(ct, mri)
    write_volume(image, tmp_path / "in.nii.gz")
    line = refusal(capsys, [task, str(tmp_path / "in.nii.gz"), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert words in line and "--force-modality" in line
    assert not (tmp_path / "out").exists()
    warnings = check_input(image, task, force_modality=True)
    assert len(warnings) == 1 and words in warnings[0]


def test_the_batch_refuses_wrong_modality_with_exit_2_and_forwards_the_force_option(mri, tmp_path):
    write_volume(mri, tmp_path / "mri.nii.gz")
    assert batch.main(["--task", "vertebrae", "--input", str(tmp_path / "mri.nii.gz"), "--output",
                       str(tmp_path / "out"), "--device", "cpu"]) == 2
    seen = []

    def stand_in(volume, force_modality=False, **options):
        seen.append(force_modality)
        raise InputError("stop here")

    batch.run_batch(tmp_path / "mri.nii.gz", tmp_path / "out", "vertebrae", "cpu", BoneComponentModel(),
                    task_function=stand_in, force_modality=True)
    assert seen == [True]
    assert batch.parse_arguments(["--task", "discs", "--input", "a", "--output", "b", "--force-modality"]).force_modality
    command = process.cli_command("python", "vertebrae", "in.nrrd", "out", force_modality=True)
    assert command[-1] == "--force-modality" and "--force-modality" not in process.cli_command("python", "discs", "a", "b")


@pytest.mark.parametrize("size_mm", [(15.0, 15.0, 15.0), (200.0, 200.0, 15.0)])
def test_an_image_that_cannot_hold_a_vertebra_is_refused(size_mm, tmp_path, capsys):
    spacing = np.array([1.0, 1.0, 1.0])
    array = np.full(tuple(int(s) for s in size_mm), -100, np.int16)
    array[::2] = -1000
    array[:, ::3] = 700
    write_volume(Volume(array, affine_from_geometry(spacing)), tmp_path / "small.nii.gz")
    line = refusal(capsys, ["vertebrae", str(tmp_path / "small.nii.gz"), "-o", str(tmp_path / "out")])
    assert "too small to hold a vertebra" in line and "20 mm" in line


def test_strong_anisotropy_is_warned_on_stderr_and_in_the_json(tmp_path, caplog):
    thick = make_ct_phantom([20, 21], spacing=(1.0, 1.0, 6.0), seed=4, margin_mm=10.0).image
    write_volume(thick, tmp_path / "thick.nii.gz")
    with caplog.at_level("WARNING", logger="spineseg"):
        run_job("vertebrae", tmp_path / "thick.nii.gz", tmp_path / "out", model=BoneComponentModel(), picture=False)
    assert any("thicker than 5 mm" in record.getMessage() for record in caplog.records)
    warnings = json.loads((tmp_path / "out" / "vertebrae.json").read_text())["warnings"]
    assert "1.00 x 1.00 x 6.00 mm" in warnings[0]
    assert warnings[1:] == [UNANCHORED_WARNING]  # L1-L2 alone: no sacrum, no rib in view
    assert storage.read_warnings(tmp_path / "out", "vertebrae") == warnings  # what Slicer's status line shows
    elongated = Volume(thick.array, affine_from_geometry((0.3, 0.3, 4.0)))
    assert "more than 3 times longer" in check_input(elongated, "vertebrae")[0]


def test_negative_metaimage_spacing_and_sheared_axes_are_refused(ct, tmp_path, capsys):
    write_volume(ct, tmp_path / "ct.mha")
    header = (tmp_path / "ct.mha").read_bytes()
    (tmp_path / "negative.mha").write_bytes(header.replace(b"ElementSpacing = 3 3 3", b"ElementSpacing = 3 3 -3", 1))
    line = refusal(capsys, ["vertebrae", str(tmp_path / "negative.mha"), "-o", str(tmp_path / "out")])
    assert "negative voxel spacing" in line
    image = sitk.ReadImage(str(tmp_path / "ct.mha"))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 1.0))  # ITK keeps the shear of NRRD files
    sitk.WriteImage(image, str(tmp_path / "sheared.nrrd"))
    line = refusal(capsys, ["vertebrae", str(tmp_path / "sheared.nrrd"), "-o", str(tmp_path / "out")])
    assert "not perpendicular" in line
    assert not (tmp_path / "out").exists()
    assert read_volume(tmp_path / "ct.mha").same_grid(ct)
