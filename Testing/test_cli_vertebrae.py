"""The ``spineseg vertebrae`` command: its four outputs, and one-line errors that leave nothing behind."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from spineseg.cli import main
from spineseg.errors import EXIT_INPUT, EXIT_MODEL
from spineseg.io import write_volume
from spineseg.metrics import score_vertebrae
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.volume import Volume, affine_from_geometry

# The bundled model scores 0.71 matched Dice and names all 6 right on this L1-sacrum phantom
# (README, bundled models); a clear drop means the model, the walk or the painting broke.
MIN_MATCHED_DICE = 0.6
MIN_IDENTIFIED = 0.6


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    # L1-sacrum, the commonest clinical field of view; the sacrum anchors the names.
    phantom = make_ct_phantom([20, 21, 22, 23, 24, 26], spacing=(2.0, 2.0, 2.5), orientation="LPS", seed=1010)
    write_volume(phantom.image, folder / "ct.nrrd")
    return folder / "ct.nrrd", phantom


def test_outputs_open_in_simpleitk_and_slicerio_on_the_input_grid(tmp_path, small_ct, capsys):
    path, phantom = small_ct
    out = tmp_path / "out"
    assert main(["vertebrae", str(path), "-o", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["vertebrae.nii.gz", "vertebrae.seg.nrrd", "vertebrae.json", "vertebrae.png"]
    )
    label_image = sitk.ReadImage(str(out / "vertebrae.nii.gz"))
    source = sitk.ReadImage(str(path))
    assert label_image.GetSize() == source.GetSize()
    assert np.allclose(label_image.GetDirection(), source.GetDirection())
    assert np.allclose(label_image.GetOrigin(), source.GetOrigin(), atol=1e-4)
    labels = sitk.GetArrayFromImage(label_image)
    table = json.loads((out / "vertebrae.json").read_text())
    segmentation = slicerio.read_segmentation(str(out / "vertebrae.seg.nrrd"))
    names = [segment["name"] for segment in segmentation["segments"]]
    assert names == [f"{record['name']} vertebra" if record["name"] != "sacrum" else "Sacrum" for record in table["vertebrae"]]
    for record, segment in zip(table["vertebrae"], segmentation["segments"]):
        assert segment["labelValue"] == record["number"]
        assert segment["terminology"]["category"][1] == "123037004"
        assert record["voxel_count"] == int((labels == record["number"]).sum()) > 0
        assert record["volume_ml"] == pytest.approx(record["voxel_count"] * 2.0 * 2.0 * 2.5 / 1000, rel=1e-3)
    assert np.array_equal(segmentation["voxels"].transpose(2, 1, 0), labels)
    # The bundled model finds the phantom's vertebrae where they are, not somewhere else.
    scores = score_vertebrae(labels.transpose(2, 1, 0), phantom.labels.array, phantom.image.spacing)
    assert len(table["vertebrae"]) >= 3
    assert scores.false_positive_labels == []
    assert scores.mean_matched_dice >= MIN_MATCHED_DICE
    assert scores.identification_rate >= MIN_IDENTIFIED


def _bad_inputs(folder):
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "notes.nrrd").write_text("not an image at all")
    flat = folder / "flat.nrrd"
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16), str(flat))
    nan = np.zeros((20, 20, 20), np.float32)
    nan[3, 4, 5] = np.nan
    write_volume(Volume(nan, np.eye(4)), folder / "nan.nrrd")
    write_volume(Volume(np.full((20, 20, 20), 50000, np.int32), affine_from_geometry((3, 3, 3))), folder / "huge.nrrd")
    good = folder / "good.nrrd"
    write_volume(Volume(np.zeros((20, 20, 20), np.int16) - 1000, affine_from_geometry((1, 1, 1))), good)
    text = good.read_bytes()
    truncated = folder / "truncated.nrrd"
    truncated.write_bytes(text[: len(text) - 200])
    spacing = folder / "zero_spacing.nrrd"
    spacing.write_bytes(text.replace(b"space directions: (-1,0,0)", b"space directions: (0,0,0)"))
    return {
        "empty.nii.gz": "empty file",
        "notes.nrrd": "cannot read",
        "flat.nrrd": "3D",
        "nan.nrrd": "NaN",
        "huge.nrrd": "Hounsfield",
        "truncated.nrrd": "cannot read",
        "zero_spacing.nrrd": "spacing|cannot read|singular",
    }


def test_bad_input_gives_one_line_error_and_no_output(tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    for name, message in cases.items():
        out = tmp_path / f"out-{name}"
        code = main(["vertebrae", str(tmp_path / name), "-o", str(out), "--device", "cpu"])
        error = capsys.readouterr().err.strip().splitlines()
        assert code == EXIT_INPUT, name
        assert len(error) == 1 and error[0].startswith("spineseg: error:"), (name, error)
        assert re.search(message, error[0]), (name, error[0])
        assert not out.exists(), name


def test_unknown_model_is_a_model_error(tmp_path, small_ct, capsys):
    path, _ = small_ct
    code = main(["vertebrae", str(path), "-o", str(tmp_path / "out"), "--model", "no-such-model"])
    assert code == EXIT_MODEL and "not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_outputs_are_not_overwritten(tmp_path, small_ct, capsys):
    path, _ = small_ct
    out = tmp_path / "out"
    out.mkdir()
    (out / "vertebrae.json").write_text("user data")
    assert main(["vertebrae", str(path), "-o", str(out)]) == EXIT_INPUT
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "vertebrae.json").read_text() == "user data"
    assert sorted(p.name for p in out.iterdir()) == ["vertebrae.json"]
