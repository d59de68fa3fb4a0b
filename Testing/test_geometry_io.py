"""Files and geometry: LPS/KJI on disk, RAS/IJK in the core, and back, voxel-exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import awkward_affine
from spineseg.errors import InputError
from spineseg.geometry import Grid, closest_ras_axes, resample_to, working_grid
from spineseg.io import read_volume, volume_from_sitk, volume_to_sitk, write_volume
from spineseg.publish import output_directory
from spineseg.volume import Volume, VolumeKind, affine_from_geometry, orientation_code


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_rotated_flipped_anisotropic_volume_round_trips_voxel_exact(tmp_path, awkward_volume, suffix):
    path = tmp_path / f"volume{suffix}"
    write_volume(awkward_volume, path)
    back = read_volume(path)
    assert np.array_equal(back.array, awkward_volume.array)
    assert np.allclose(back.affine, awkward_volume.affine, atol=1e-4)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_sitk_conversion_maps_voxel_to_the_same_physical_point(awkward_volume):
    image = volume_to_sitk(awkward_volume)
    ijk = (3, 7, 5)
    lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
    ras = awkward_volume.ijk_to_ras(ijk)[0]
    assert np.allclose(ras, lps * [-1, -1, 1], atol=1e-6)
    assert image[ijk] == awkward_volume.array[ijk]
    assert np.array_equal(volume_from_sitk(image).array, awkward_volume.array)


def test_orientation_code_and_closest_axes():
    direction = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)  # i->A, j->I, k->L
    assert orientation_code(direction) == "AIL"
    axes, signs = closest_ras_axes(direction)
    assert list(axes) == [2, 0, 1] and list(signs) == [-1, 1, -1]


def test_working_grid_points_right_anterior_superior_and_covers_the_volume(awkward_volume):
    grid = working_grid(awkward_volume, 2.0)
    direction = grid.affine[:3, :3] / 2.0
    assert np.all(np.diag(direction) > 0.8)
    corners = awkward_volume.ijk_to_ras(np.array(np.meshgrid([0, 16], [0, 22], [0, 10], indexing="ij")).reshape(3, -1).T)
    inside = (corners - grid.affine[:3, 3]) @ np.linalg.inv(grid.affine[:3, :3]).T
    assert np.all(inside > -0.5) and np.all(inside < np.array(grid.shape) - 0.5)


def test_label_resampling_onto_a_permuted_grid_is_exact():
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[2:5, 3:9, 4:12] = 7
    volume = Volume(labels, affine_from_geometry((2, 2, 2), (5, 5, 5), np.diag([-1.0, -1, 1])[:, [2, 0, 1]]),
                    VolumeKind.LABEL)
    grid = working_grid(volume, 2.0)
    moved = resample_to(volume, grid)
    assert moved.array.dtype == np.uint8 and moved.array.sum() == labels.sum()
    back = resample_to(moved, Grid(volume.shape, volume.affine))
    assert np.array_equal(back.array, labels)


@pytest.mark.parametrize("spacing_mm", [3.0, 1.0])  # blurred on every axis, on one axis
@pytest.mark.parametrize("direction", [np.diag([-1.0, -1, 1]), np.diag([-1.0, -1, 1])[:, [2, 0, 1]]])
def test_resampling_in_slabs_gives_the_whole_volume_result(direction, spacing_mm):
    """Slabs of a large source (here forced by a small ``chunk_voxels``) read only the source they need."""
    rng = np.random.default_rng(3)
    hounsfield = rng.integers(-1000, 2000, size=(40, 50, 70)).astype(np.int16)
    volume = Volume(hounsfield, affine_from_geometry((0.7, 0.7, 0.6), (3, -2, 5), direction))
    grid = working_grid(volume, spacing_mm)
    whole = resample_to(volume, grid, fill_value=np.nan).array
    slabs = resample_to(volume, grid, fill_value=np.nan, chunk_voxels=10_000).array
    assert whole.dtype == slabs.dtype == np.float32
    assert np.allclose(slabs, whole, rtol=1e-6, atol=1e-3, equal_nan=True)
    labels = volume.with_array((hounsfield > 500).astype(np.uint8), VolumeKind.LABEL)
    assert np.array_equal(resample_to(labels, grid).array, resample_to(labels, grid, chunk_voxels=10_000).array)


@pytest.mark.parametrize(
    "array, affine, message",
    [
        (np.zeros((4, 4)), np.eye(4), "3D"),
        (np.zeros((0, 4, 4)), np.eye(4), "empty"),
        (np.zeros((4, 4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]), "spacing"),
        (np.zeros((4, 4, 4)), np.full((4, 4), np.nan), "affine"),
    ],
)
def test_volume_rejects_bad_geometry(array, affine, message):
    with pytest.raises(InputError, match=message):
        Volume(array, affine)


def test_read_rejects_bad_files(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    (tmp_path / "text.nrrd").write_text("this is not an image")
    with pytest.raises(InputError, match="empty file"):
        read_volume(tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="cannot read"):
        read_volume(tmp_path / "text.nrrd")
    with pytest.raises(InputError, match="not found"):
        read_volume(tmp_path / "missing.nii.gz")
    good = tmp_path / "good.nii.gz"
    write_volume(Volume(np.zeros((20, 20, 20), np.int16), np.eye(4)), good)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="cannot read"):
        read_volume(truncated)
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(30, 30, sitk.sitkInt16), str(flat))
    with pytest.raises(InputError, match="3D"):
        read_volume(flat)
    nan = np.zeros((5, 5, 5), np.float32)
    nan[2, 2, 2] = np.nan
    for name in ("nan.nrrd", "nan.nii.gz", "nan.nii"):  # ITK's NIfTI reader alone would turn NaN into 0
        write_volume(Volume(nan, np.eye(4)), tmp_path / name)
        with pytest.raises(InputError, match="1 NaN"):
            read_volume(tmp_path / name)
    zero_spacing = tmp_path / "zero_spacing.nii"
    write_volume(Volume(np.zeros((5, 5, 5), np.float32), np.eye(4)), zero_spacing)
    header = bytearray(zero_spacing.read_bytes())
    header[84:88] = np.float32(0.0).tobytes()  # pixdim[2]; ITK alone would read it as 1 mm
    zero_spacing.write_bytes(bytes(header))
    with pytest.raises(InputError, match="spacing"):
        read_volume(zero_spacing)


def test_output_directory_leaves_nothing_on_failure_and_keeps_user_files(tmp_path):
    target = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with output_directory(target, ["a.json"]) as staging:
            (staging / "a.json").write_text("{}")
            raise RuntimeError("boom")
    assert not target.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "a.json").write_text(json.dumps({"user": "data"}))
    with pytest.raises(InputError, match="already holds a.json"):
        with output_directory(existing, ["a.json"]):
            pass
    assert json.loads((existing / "a.json").read_text()) == {"user": "data"}
    with output_directory(existing, ["a.json"], overwrite=True) as staging:
        (staging / "a.json").write_text("{}")
    assert (existing / "a.json").read_text() == "{}" and sorted(p.name for p in existing.iterdir()) == ["a.json"]
