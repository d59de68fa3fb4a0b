"""Hostile inputs, round 3 (issue 32): geometry read as the scanner meant it, special files named, a full disk
reported, and publishing that neither clobbers nor mixes two sets (concurrent runs, kill -9 at any point)."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))

import spineseg.publish  # noqa: E402
from spineseg.cli import main  # noqa: E402
from spineseg.errors import EXIT_INPUT, EXIT_OK, InputError  # noqa: E402
from spineseg.io import read_input, read_volume, write_volume  # noqa: E402
from spineseg.publish import STAGING_PREFIX, output_directory  # noqa: E402
from spineseg.volume import Volume, VolumeKind, affine_from_geometry  # noqa: E402
from test_batch import fake_vertebrae  # noqa: E402
from test_dicom_series import write_series  # noqa: E402

NAMES = ["a.nii.gz", "b.png", "set.json"]  # the marker last


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def one_error_line_of(capsys, arguments: list[str]) -> str:
    assert main(arguments) == EXIT_INPUT
    return one_error_line(capsys)


def write_ct(path: Path, seed: int = 0) -> Path:
    array = np.random.default_rng(seed).integers(-1000, 1500, (12, 12, 10)).astype(np.int16)
    write_volume(Volume(array, affine_from_geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))), path)
    return path


# --- geometry ---------------------------------------------------------------------------------------------

BALL_CENTRE_LPS = np.array([16.0, 14.0, 19.0])
BALL_RADIUS_MM = 6.0


def write_tilted_series(folder: Path, tilt_degrees: float, slices: int = 20, step: float = 2.0) -> None:
    """An axial CT series of a bright ball whose slices are sheared along y (gantry tilt): the orientation
    stays axial, each slice's position moves ``step * tan(tilt)`` mm forward per slice, and the pixels show
    the ball where it really is."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    shift = step * np.tan(np.radians(tilt_degrees))
    x, y = np.meshgrid(np.arange(32.0), np.arange(32.0), indexing="xy")  # array [row j, column i]
    for index in range(slices):
        origin = np.array([0.0, index * shift, index * step])
        distance = np.sqrt((x + origin[0] - BALL_CENTRE_LPS[0]) ** 2 + (y + origin[1] - BALL_CENTRE_LPS[1]) ** 2
                           + (origin[2] - BALL_CENTRE_LPS[2]) ** 2)
        pixels = np.where(distance <= BALL_RADIUS_MM, 1000, -1000).astype(np.int16)
        image = sitk.GetImageFromArray(pixels[np.newaxis])
        image.SetSpacing((1.0, 1.0, step))
        for key, tag in (("0008|0060", "CT"), ("0020|000e", "1.2.3.9"), ("0020|000d", "1.2.3"),
                         ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0032", "\\".join(f"{v:.4f}" for v in origin)),
                         ("0020|0013", str(index + 1)), ("0008|0018", f"1.2.3.9.{index + 1}"),
                         ("0028|0030", "1\\1")):
            image.SetMetaData(key, tag)
        writer.SetFileName(str(folder / f"IM{index:05d}.dcm"))
        writer.Execute(image)
    strip_extensions(folder)


def strip_extensions(folder: Path) -> None:
    """Name the files as a PACS export does: IM00001, no extension (ITK writes DICOM only to a .dcm name)."""
    for number, path in enumerate(sorted(folder.glob("*.dcm")), start=1):
        path.rename(folder / f"IM{number:05d}")


def ball_centre_lps(volume: Volume) -> np.ndarray:
    bright = np.argwhere(volume.array > 0)
    ras = volume.ijk_to_ras(bright.mean(axis=0))[0]
    return ras * np.array([-1.0, -1.0, 1.0])


def test_a_gantry_tilted_dicom_series_is_resampled_onto_an_orthogonal_grid(tmp_path):
    write_tilted_series(tmp_path / "tilted", 15.0)
    volume, warnings = read_input(tmp_path / "tilted", modality="CT")
    assert len(warnings) == 1 and "gantry tilt of 15.0 degrees" in warnings[0]
    assert abs(volume.direction.T @ volume.direction - np.eye(3)).max() < 1e-6
    assert np.allclose(volume.spacing, (1.0, 1.0, 2.0), atol=1e-4)
    # Read as an untilted stack the ball would sit (20 slices / 2) x 0.54 mm ~ 5 mm too far back.
    assert np.linalg.norm(ball_centre_lps(volume) - BALL_CENTRE_LPS) < 0.5
    volume_ml = (volume.array > 0).sum() * np.prod(volume.spacing) / 1000
    assert volume_ml == pytest.approx(4 / 3 * np.pi * BALL_RADIUS_MM ** 3 / 1000, rel=0.1)


def test_an_untilted_series_is_read_as_it_is(tmp_path):
    write_tilted_series(tmp_path / "straight", 0.0)
    volume, warnings = read_input(tmp_path / "straight", modality="CT")
    assert warnings == [] and volume.shape == (32, 32, 20)
    assert np.linalg.norm(ball_centre_lps(volume) - BALL_CENTRE_LPS) < 0.5


def test_the_tilt_warning_reaches_the_json(tmp_path):
    write_tilted_series(tmp_path / "tilted", 15.0)
    from spineseg.jobs import run_job

    run_job("vertebrae", tmp_path / "tilted", tmp_path / "out", predict=fake_vertebrae, device="cpu", picture=False)
    warnings = json.loads((tmp_path / "out" / "vertebrae.json").read_text())["warnings"]
    assert any("gantry tilt of 15.0 degrees" in warning for warning in warnings)


def nifti_with_two_placements(path: Path, sform_shift_mm: float, mirror: bool) -> Path:
    """An uncompressed NIfTI whose sform is the qform moved along x (and mirrored in x)."""
    image = sitk.GetImageFromArray(np.zeros((25, 25, 25), np.int16))
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path))
    header = bytearray(path.read_bytes())
    assert struct.unpack("<2h", header[252:256]) == (1, 1)  # ITK writes both placements
    srow = list(struct.unpack("<12f", header[280:328]))
    if mirror:
        srow[0] = -srow[0]
    srow[3] += sform_shift_mm
    header[280:328] = struct.pack("<12f", *srow)
    path.write_bytes(bytes(header))
    return path


def test_a_nifti_whose_qform_and_sform_disagree_is_refused(tmp_path, capsys):
    path = nifti_with_two_placements(tmp_path / "two.nii", 50.0, mirror=True)
    assert main(["vertebrae", str(path), "-o", str(tmp_path / "out")]) == EXIT_INPUT
    line = one_error_line(capsys)
    assert "qform and sform" in line and "mirrored" in line and "ITK the sform" in line
    assert not (tmp_path / "out").exists()


def test_a_nifti_whose_placements_differ_by_rounding_is_read(tmp_path):
    path = nifti_with_two_placements(tmp_path / "close.nii", 0.001, mirror=False)
    assert read_volume(path).shape == (25, 25, 25)


def test_a_nested_pacs_export_is_read_and_its_subfolders_named(tmp_path, capsys):
    export = tmp_path / "export"
    (export).mkdir()
    (export / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # the index; the series lie below
    write_tilted_series(export / "DICOM" / "PA000000" / "ST000000" / "SE000000", 0.0)
    volume = read_volume(export, modality="CT")
    assert volume.shape == (32, 32, 20)
    write_series(export / "DICOM" / "PA000000" / "ST000000" / "SE000001", "1.2.3.7", "CT", 8)
    strip_extensions(export / "DICOM" / "PA000000" / "ST000000" / "SE000001")
    assert main(["vertebrae", str(export), "-o", str(tmp_path / "out")]) == EXIT_INPUT
    line = one_error_line(capsys)
    assert "in DICOM/PA000000/ST000000/SE000000" in line and "in DICOM/PA000000/ST000000/SE000001" in line
    assert read_volume(export, modality="CT", series="1.2.3.7").shape == (8, 8, 8)


def test_a_folder_without_any_series_says_its_subfolders_were_searched(tmp_path):
    (tmp_path / "empty" / "DICOM" / "PA0").mkdir(parents=True)
    (tmp_path / "empty" / "DICOM" / "PA0" / "notes.txt").write_text("no images")
    with pytest.raises(InputError, match="holds no DICOM series \\(nor do its sub-folders\\)"):
        read_volume(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_special_files_are_named_for_what_they_are(tmp_path, kind, capsys):
    if kind == "device":
        path, words = Path("/dev/zero"), "is a character device"
    else:
        path, words = tmp_path / "pipe", "is a named pipe (FIFO)"
        os.mkfifo(path)
    assert main(["vertebrae", str(path), "-o", str(tmp_path / "out")]) == EXIT_INPUT  # a FIFO must not block
    line = one_error_line(capsys)
    assert words in line and "empty" not in line


# --- full disk ----------------------------------------------------------------------------------------------

def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    ct = write_ct(tmp_path / "ct.nii.gz")

    def disk_full(image, result, path, title):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("spineseg.pictures.write_vertebrae_picture", disk_full)
    monkeypatch.setattr("spineseg.jobs._predictor", lambda spec: fake_vertebrae)
    arguments = ["vertebrae", str(ct), "-o", str(tmp_path / "out"), "--device", "cpu", "--progress-format", "json"]
    assert main(arguments) == EXIT_INPUT  # progress on stdout: stderr holds the error alone
    line = one_error_line(capsys)
    assert "the disk is full" in line and "vertebrae.png" in line and "no output was written" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]  # no output folder, no staging


# --- publishing ---------------------------------------------------------------------------------------------

def _race(out: Path, ct: Path, name: str, overwrite: bool, ready: Path) -> None:
    """A child process: the CLI into ``out``, its prediction held until both runs have passed the early check."""
    def slow(volume, **options):
        (ready / f"{name}").write_text("")
        deadline = time.monotonic() + 30
        while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        return fake_vertebrae(volume, **options)

    import spineseg.jobs

    spineseg.jobs._predictor = lambda spec: slow
    sys.stderr = sys.stdout = open(out.parent / f"{name}.err", "w")
    arguments = ["vertebrae", str(ct), "-o", str(out), "--no-picture", "--device", "cpu", "--input-name", name]
    code = main(arguments + (["--overwrite"] if overwrite else []))
    sys.stderr.flush()
    os._exit(code)


def complete_set(out: Path) -> str:
    """The input name of the one complete set in ``out``, checked whole: its label map matches its JSON."""
    document = json.loads((out / "vertebrae.json").read_text())
    labels = read_volume(out / "vertebrae.nii.gz", VolumeKind.LABEL).array
    for record in document["vertebrae"]:
        assert (labels == record["number"]).sum() == record["voxel_count"]
    assert not list(out.glob(STAGING_PREFIX + "*"))
    return document["input"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_runs_into_one_new_folder_never_mix(tmp_path, overwrite):
    out, ready = tmp_path / "out", tmp_path / "ready"
    ready.mkdir()
    cts = [write_ct(tmp_path / f"ct{seed}.nii.gz", seed) for seed in (1, 2)]
    context = multiprocessing.get_context("fork")
    runs = [context.Process(target=_race, args=(out, ct, f"run{n}", overwrite, ready)) for n, ct in enumerate(cts)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    codes = sorted(run.exitcode for run in runs)
    winner = complete_set(out)
    if overwrite:
        assert codes == [EXIT_OK, EXIT_OK]
    else:
        assert codes == [EXIT_OK, EXIT_INPUT]
        loser = "run1" if winner == "run0" else "run0"
        message = (tmp_path / f"{loser}.err").read_text().strip().splitlines()[-1]
        assert message.startswith("spineseg: error: ") and "written by another run while this one worked" in message


def _publish_killed_at(out: Path, step: int) -> None:
    """A child process: an --overwrite publish of the "new" set, killed (SIGKILL) at its ``step``-th file
    operation in ``out`` (renames and removals, the commit's and the staging folder's included)."""
    count = [0]

    def killing(operation):
        def run(*args, **kwargs):
            if not str(args[0]).startswith(str(out)):
                return operation(*args, **kwargs)
            if count[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            count[0] += 1
            return operation(*args, **kwargs)
        return run

    spineseg.publish.os.replace = killing(os.replace)
    spineseg.publish.os.unlink = killing(os.unlink)
    with output_directory(out, NAMES[::2], overwrite=True, stale=["b.png"]) as staging:
        for name in NAMES[::2]:
            (staging / name).write_text("new")
    os._exit(0)


def test_kill_9_at_any_point_of_an_overwrite_publish_leaves_a_complete_set(tmp_path):
    """The new set has no picture, so publishing also removes the old one; wherever the kill lands, the folder
    shows no mix beside a marker, and the next run (in another folder) leaves one complete set."""
    context = multiprocessing.get_context("fork")
    outcomes = set()
    for step in range(12):
        out = tmp_path / f"out{step}"
        out.mkdir()
        for name in NAMES:
            (out / name).write_text("old")
        child = context.Process(target=_publish_killed_at, args=(out, step))
        child.start()
        child.join(30)
        if child.exitcode == 0:
            break
        assert child.exitcode == -signal.SIGKILL
        shown = {p.name: p.read_text() for p in out.iterdir() if not p.name.startswith(".")}
        if "set.json" in shown:  # a marker only ever stands beside its own complete set
            assert shown == {name: "old" for name in NAMES}
        with output_directory(tmp_path / "elsewhere", ["x.json"], overwrite=True) as staging:
            (staging / "x.json").write_text("{}")
        after = {p.name: p.read_text() for p in out.iterdir()}
        assert after in ({name: "old" for name in NAMES}, {"a.nii.gz": "new", "set.json": "new"}), (step, after)
        outcomes.add(after["set.json"])
    else:
        pytest.fail("the publish never finished")
    assert outcomes == {"old", "new"}  # kills before and after the commit were both tried


def test_a_stale_staging_folder_is_removed_by_a_run_elsewhere(tmp_path):
    left = tmp_path / "left"
    context = multiprocessing.get_context("fork")

    def killed_while_staging() -> None:
        with output_directory(left, NAMES) as staging:
            (staging / "a.nii.gz").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)

    child = context.Process(target=killed_while_staging)
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL and len(list(left.glob(STAGING_PREFIX + "*"))) == 1
    with output_directory(tmp_path / "elsewhere", ["x.json"]) as staging:
        (staging / "x.json").write_text("{}")
    assert list(left.iterdir()) == []


# --- training -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("existing", [False, True])
def test_a_refused_training_leaves_its_out_folder_as_it_found_it(tmp_path, capsys, existing):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    ct = write_ct(data / "images" / "case1.nii.gz")
    labels = np.zeros(read_volume(ct).shape, np.uint8)
    labels[4:8, 4:8, 3:6] = 99  # not a VerSe number
    write_volume(read_volume(ct).with_array(labels, VolumeKind.LABEL), data / "labels" / "case1.nii.gz")
    run = tmp_path / "run"
    if existing:
        run.mkdir()
        (run / "notes.txt").write_text("mine")
    arguments = ["train", "vertebrae", "--data", str(data), "--out", str(run), "--set", "threads=1",
                 "--set", "data.validation_fraction=0"]
    assert main(arguments) == EXIT_INPUT
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar of reading the cases
    assert error.startswith("spineseg: error: ") and "found values [99]" in error
    assert (sorted(p.name for p in run.iterdir()) == ["notes.txt"]) if existing else not run.exists()


# --- empty spine region ---------------------------------------------------------------------------------------

def test_a_ct_shrunk_by_a_wrong_voxel_size_is_refused_before_the_walk(tmp_path, capsys):
    """The real CT's 122 x 101 x 112 voxels labelled 0.3 x 0.3 x 10 mm: 37 x 30 mm across, where the walk
    found no vertebra and crashed; refused with its extent and what to check."""
    array = np.random.default_rng(0).integers(-1000, 1500, (122, 101, 112)).astype(np.int16)
    write_volume(Volume(array, affine_from_geometry((0.3, 0.3, 10.0))), tmp_path / "thin.nii.gz")
    line = one_error_line_of(capsys, ["vertebrae", str(tmp_path / "thin.nii.gz"), "-o", str(tmp_path / "out")])
    assert "too narrow to hold a vertebra" in line and "[36.6, 30.3, 1120.0] mm" in line and "PixelSpacing" in line


# --- CT values no scanner produces ----------------------------------------------------------------------------

def with_hot_pixels(volume: Volume, share: float = 5e-4, seed: int = 0) -> Volume:
    """``share`` of the voxels set to +1e6 (half) and -1e6 (half): a broken detector's hot and dead pixels."""
    array = volume.array.astype(np.float32)
    chosen = np.random.default_rng(seed).choice(array.size, int(share * array.size), replace=False)
    array.flat[chosen[: len(chosen) // 2]] = 1e6
    array.flat[chosen[len(chosen) // 2:]] = -1e6
    return volume.with_array(array)


def test_a_few_impossible_ct_values_change_no_name_and_no_volume(tmp_path):
    from spineseg.phantoms.ct import make_ct_phantom
    from spineseg.jobs import run_job
    from test_orientation_invariance import BoneComponentModel

    ct = make_ct_phantom([18, 19, 20, 21], spacing=(1.5, 1.5, 1.5), seed=4, margin_mm=10.0).image
    write_volume(ct, tmp_path / "plain.nii.gz")
    write_volume(with_hot_pixels(ct), tmp_path / "hot.nii.gz")
    found = {}
    for name in ("plain", "hot"):
        run_job("vertebrae", tmp_path / f"{name}.nii.gz", tmp_path / name, model=BoneComponentModel(),
                picture=False)
        found[name] = json.loads((tmp_path / name / "vertebrae.json").read_text())
    volumes = {name: {r["name"]: r["volume_ml"] for r in document["vertebrae"]} for name, document in found.items()}
    assert list(volumes["hot"]) == list(volumes["plain"]) and len(volumes["plain"]) >= 3
    for label, volume_ml in volumes["plain"].items():
        assert volumes["hot"][label] == pytest.approx(volume_ml, rel=0.03), label
    assert "hold values no CT scanner produces" in found["hot"]["warnings"][0]
    assert not any("scanner" in warning for warning in found["plain"]["warnings"])


def test_a_full_disk_while_writing_one_file_keeps_the_old_one(tmp_path):
    from spineseg.publish import atomic_path

    target = tmp_path / "checkpoint.json"
    target.write_text("old")
    with pytest.raises(InputError, match="the disk is full"):
        with atomic_path(target) as temporary:
            temporary.write_text("ne")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temporary))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"] and target.read_text() == "old"


def test_a_full_disk_while_writing_the_label_map_names_the_output(tmp_path, monkeypatch):
    def cannot_write(*args, **kwargs):
        raise RuntimeError("itk::ERROR: could not write file")

    monkeypatch.setattr("spineseg.io.sitk.WriteImage", cannot_write)
    monkeypatch.setattr("spineseg.io.shutil.disk_usage", lambda path: SimpleNamespace(free=0))
    with pytest.raises(InputError) as refused:
        with output_directory(tmp_path / "out", ["a.nii.gz"]) as staging:
            write_ct(staging / "a.nii.gz")
    assert str(refused.value).startswith(f"the disk is full: no space left to write {tmp_path / 'out' / 'a.nii.gz'}")
    assert str(refused.value).endswith("no output was written")
