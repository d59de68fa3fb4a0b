"""The disc job end to end with a tiny untrained model: files, LPS/RAS, bad inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spineseg.networks.hourglass import AttentionHourglassNet, HourglassConfig
from spineseg.choices import Task
from spineseg.networks.disc_model import DiscModel
from spineseg.training.tasks.discs import disc_manifest
from spineseg.errors import InputError, ModelError
from spineseg.io import write_volume
from spineseg.jobs import output_names, run_discs
from spineseg.model_store import load_model, save_model
from spineseg.phantoms.mri import make_mri_phantom
from spineseg.networks.disc_model import DiscModel
from spineseg.training.tasks.discs import disc_manifest
from spineseg.volume import Volume, affine_from_geometry


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> DiscModel:
    import torch

    torch.manual_seed(0)
    network = AttentionHourglassNet(HourglassConfig(features=8))
    entry = save_model(network.state_dict(), disc_manifest(network.config, 256, 1.25),
                       tmp_path_factory.mktemp("model"), "tiny")
    return load_model(Task.DISCS, entry.weights_path, "cpu")


@pytest.fixture(scope="module")
def mri_file(tmp_path_factory) -> Path:
    phantom = make_mri_phantom("cervical", contrast="T2", orientation="PIR", rotation_deg=8.0, spacing=(1.2, 1.2, 3.5))
    path = tmp_path_factory.mktemp("mri") / "t2.nii.gz"
    write_volume(phantom.image, path)
    return path


def test_outputs_written_and_markups_read_back(tiny_model, mri_file, tmp_path):
    out = tmp_path / "out"
    result = run_discs(mri_file, out, model=tiny_model, device="cpu").result
    assert sorted(p.name for p in out.iterdir()) == sorted(output_names(Task.DISCS))
    markups = json.loads((out / "discs.mrk.json").read_text())
    assert markups["@schema"].endswith("markups-schema-v1.0.3.json#")
    node = markups["markups"][0]
    assert node["type"] == "Fiducial" and node["coordinateSystem"] == "LPS"
    assert len(node["controlPoints"]) == len(result.discs)
    for point, disc in zip(node["controlPoints"], result.discs):
        assert point["label"] == disc.name
        lps = np.array(point["position"])
        assert np.allclose(lps * [-1, -1, 1], disc.position_ras, atol=1e-3)  # LPS -> RAS flips R and A
    table = json.loads((out / "discs.json").read_text())
    assert table["input"] == str(mri_file) and table["model"]["name"] == "tiny"
    assert [d["number"] for d in table["discs"]] == result.numbers
    assert (out / "discs.png").stat().st_size > 1000
    with pytest.raises(InputError, match="overwrite"):
        run_discs(mri_file, out, model=tiny_model, device="cpu")


def test_markups_positions_for_known_disc(tmp_path):
    from spineseg.writers import write_markups
    from spineseg.results import DiscRecord, DiscsResult

    write_markups(DiscsResult([DiscRecord(25, (10.0, -20.0, 30.0), 0.5)]), tmp_path / "d.mrk.json")
    point = json.loads((tmp_path / "d.mrk.json").read_text())["markups"][0]["controlPoints"][0]
    assert point["label"] == "L5/S1" and point["position"] == [-10.0, 20.0, 30.0]


def _write_2d(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64), np.float32)), str(path))


def _write_small(path: Path) -> None:
    write_volume(Volume(np.ones((10, 10, 10), np.float32), np.eye(4)), path)


def _write_flat(path: Path) -> None:
    write_volume(Volume(np.ones((64, 64, 1), np.float32), np.eye(4)), path)


def _write_empty(path: Path) -> None:
    path.write_bytes(b"")


def _write_truncated(path: Path) -> None:
    write_volume(Volume(np.random.default_rng(0).random((40, 40, 40)).astype(np.float32), np.eye(4)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _write_text(path: Path) -> None:
    path.write_text("this is not an image\n")


def _write_nan(path: Path) -> None:
    array = np.ones((40, 60, 60), np.float32)
    array[3, 4, 5] = np.nan
    write_volume(Volume(array, affine_from_geometry((1, 1, 1))), path)


def _write_zero_spacing(path: Path) -> None:
    write_volume(Volume(np.ones((40, 60, 60), np.float32), affine_from_geometry((1, 1, 1))), path)
    # Patch pixdim[1] (x spacing, float32 at byte 80 of the NIfTI-1 header) to 0.
    header = bytearray(gzip.decompress(path.read_bytes()))
    header[80:84] = np.float32(0.0).tobytes()
    path.write_bytes(gzip.compress(bytes(header)))


BAD_INPUTS = {
    "2d": (_write_2d, "3D"),
    "too_small": (_write_small, "too small"),
    "flat": (_write_flat, "2D"),
    "empty": (_write_empty, "empty"),
    "truncated": (_write_truncated, "cannot read"),
    "text": (_write_text, "cannot read"),
    "nan": (_write_nan, "NaN"),
    "zero_spacing": (_write_zero_spacing, "spacing"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_clear_error_and_no_outputs(case, tiny_model, tmp_path):
    writer, words = BAD_INPUTS[case]
    # NaN through NRRD: SimpleITK's NIfTI reader turns NaN voxels into 0 on its own.
    path = tmp_path / (f"{case}.nrrd" if case == "nan" else f"{case}.nii.gz")
    writer(path)
    out = tmp_path / "out"
    with pytest.raises(InputError) as error:
        run_discs(path, out, model=tiny_model, device="cpu")
    message = str(error.value)
    assert words.lower() in message.lower(), message
    assert "\n" not in message
    assert not out.exists()


def test_damaged_model_is_refused(tmp_path, tiny_model):
    weights = save_model(tiny_model.network.state_dict(), tiny_model.entry.manifest, tmp_path, "m").weights_path
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelError, match="sha256"):
        load_model(Task.DISCS, weights)


def test_discs_json_says_how_the_names_were_counted(tmp_path):
    from spineseg.discs.decode import UNANCHORED_WARNING
    from spineseg.results import DiscNaming, DiscRecord, DiscsResult
    from spineseg.writers import result_table, write_json

    discs = [DiscRecord(12, (0.0, 0.0, 10.0), 0.4)]
    unanchored = result_table(DiscsResult(discs, warnings=[UNANCHORED_WARNING], naming=DiscNaming(None, 0.2)),
                              "in.nii.gz", {"name": "m"})
    anchored = result_table(DiscsResult(discs, naming=DiscNaming("sacrum", 0.8)), "in.nii.gz", {"name": "m"})
    write_json(unanchored, tmp_path / "discs.json")
    read = json.loads((tmp_path / "discs.json").read_text())
    assert read["naming"] == {"anchor": None, "anchored": False}
    assert read["discs"][0]["confidence"] == 0.4  # the names' confidence is each disc's
    assert "neither C2 nor the sacrum is in view" in read["warnings"][0]
    assert anchored["naming"] == {"anchor": "sacrum", "anchored": True} and anchored["warnings"] == []
    assert DiscNaming("C2").summary == "names counted from C2"
    assert DiscNaming().summary == "unanchored: no C2 or sacrum in view"
    assert DiscNaming(None, 0.23).summary == "unanchored: no C2 or sacrum in view, confidence 0.23"
