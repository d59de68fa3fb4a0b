"""Output files: published as one set, readable by others, no stale staging, one-line errors for unwritable folders."""

from __future__ import annotations

import os
import signal
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import spineseg.io  # noqa: E402
import spineseg.publish  # noqa: E402
from spineseg.cli import main  # noqa: E402
from spineseg.errors import EXIT_INPUT, EXIT_INTERRUPTED, CancelledError, InputError  # noqa: E402
from spineseg.io import read_volume, write_volume  # noqa: E402
from spineseg.jobs import run_job  # noqa: E402
from spineseg.publish import STAGING_PREFIX, output_directory  # noqa: E402
from spineseg.volume import Volume, affine_from_geometry  # noqa: E402
from test_batch import fake_vertebrae  # noqa: E402
from test_dicom_series import write_series  # noqa: E402

NAMES = ["a.nii.gz", "b.png", "set.json"]  # the marker last


@pytest.fixture
def ct(tmp_path) -> Path:
    array = np.random.default_rng(0).integers(-1000, 1500, (12, 12, 10)).astype(np.int16)
    path = tmp_path / "ct.nii.gz"
    write_volume(Volume(array, affine_from_geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))), path)
    return path


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def stage(staging: Path, names: list[str], text: str) -> None:
    for name in names:
        (staging / name).write_text(text)


def test_overwrite_without_picture_removes_the_old_picture_and_publishes_readable_files(tmp_path, ct, umask_022):
    out = tmp_path / "out"
    run_job("vertebrae", ct, out, predict=fake_vertebrae, device="cpu")
    assert (out / "vertebrae.png").exists()
    run_job("vertebrae", ct, out, predict=fake_vertebrae, device="cpu", overwrite=True, picture=False)
    assert sorted(p.name for p in out.iterdir()) == ["vertebrae.json", "vertebrae.nii.gz", "vertebrae.seg.nrrd"]
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # the umask's, not mkstemp's 0600


def test_a_signal_during_publishing_waits_and_then_reports_the_complete_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    stage(out, NAMES, "old")
    moved = []
    original = os.replace

    def replace_then_signal(source, target):
        original(source, target)
        if Path(target).parent != out:
            return  # the staging folder's commit
        moved.append(Path(target).name)
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between two moves

    monkeypatch.setattr(spineseg.publish.os, "replace", replace_then_signal)
    with pytest.raises(CancelledError) as stop:
        with output_directory(out, NAMES, overwrite=True) as staging:
            stage(staging, NAMES, "new")
    assert moved == NAMES
    assert [p.name for p in stop.value.written] == NAMES
    assert {p.name: p.read_text() for p in out.iterdir()} == {name: "new" for name in NAMES}


def test_an_interrupted_job_says_which_complete_outputs_it_left(tmp_path, monkeypatch, capsys):
    written = [tmp_path / "vertebrae.json"]

    def stopped(*args, **kwargs):
        raise CancelledError("stop", written=written)

    monkeypatch.setattr("spineseg.jobs.run_job", stopped)
    assert main(["vertebrae", str(tmp_path / "ct.nrrd"), "-o", str(tmp_path)]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted after the outputs were complete" in err and str(written[0]) in err


def test_publishing_takes_the_old_marker_away_first(tmp_path, monkeypatch):
    """A run killed (-9) between two moves leaves no marker beside a mix of old and new files."""
    out = tmp_path / "out"
    out.mkdir()
    stage(out, NAMES, "old")

    original = os.replace

    def killed(source, target):
        if Path(target).parent != out:
            return original(source, target)  # the staging folder's commit
        raise KeyboardInterrupt  # stands for kill -9 at the first move: no cleanup code runs after it in reality

    monkeypatch.setattr(spineseg.publish.os, "replace", killed)
    monkeypatch.setattr(spineseg.publish.shutil, "rmtree", lambda *args, **kwargs: None)  # nothing cleans up
    with pytest.raises(KeyboardInterrupt):
        with output_directory(out, NAMES, overwrite=True) as staging:
            stage(staging, NAMES, "new")
    assert not (out / "set.json").exists()


def test_staging_left_by_a_killed_run_is_removed_but_a_running_one_is_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    (stale / ".lock").write_bytes(b"")
    (stale / "a.nii.gz").write_text("half")
    with output_directory(out, NAMES) as running:
        with output_directory(out, ["other.json"]) as staging:
            (staging / "other.json").write_text("{}")
        assert not stale.exists() and running.exists()
        stage(running, NAMES, "new")
    assert sorted(p.name for p in out.iterdir()) == sorted([*NAMES, "other.json"])


@pytest.mark.parametrize("case", ["parent is a file", "symlink loop", "json is a folder", "read-only"])
def test_unwritable_outputs_exit_2_with_one_line_before_predicting(tmp_path, ct, case, capsys, monkeypatch):
    out = tmp_path / "out"
    if case == "parent is a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif case == "symlink loop":
        out.symlink_to(out)
    elif case == "json is a folder":
        (out / "vertebrae.json").mkdir(parents=True)
    else:  # root ignores permissions, so the folder refuses the way a read-only one does
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(out))

        monkeypatch.setattr(spineseg.publish.tempfile, "mkdtemp", refuse)
    monkeypatch.setattr("spineseg.jobs._predictor", lambda spec: pytest.fail("predicted before checking the output"))
    assert main(["vertebrae", str(ct), "-o", str(out), "--overwrite", "--device", "cpu"]) == EXIT_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "Traceback" not in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"ct.nii.gz", "file" if case == "parent is a file" else "out"})
    if case == "json is a folder":
        assert [p.name for p in out.iterdir()] == ["vertebrae.json"]


def test_a_permission_denied_input_is_not_called_damaged(ct, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(ct))

    monkeypatch.setattr(spineseg.io.gzip, "open", denied)
    with pytest.raises(InputError, match="permission denied") as refused:
        read_volume(ct)
    assert "damaged" not in str(refused.value)


@pytest.mark.parametrize("link", ["dangling", "looping"])
def test_a_stray_symlink_does_not_hide_a_dicom_series(tmp_path, link):
    write_series(tmp_path, "1.2.3.1", "CT", 8)
    target = tmp_path / "nowhere.dcm" if link == "dangling" else tmp_path / "stray.dcm"
    (tmp_path / "stray.dcm").symlink_to(target)
    assert read_volume(tmp_path, modality="CT").shape == (8, 8, 8)
    assert (tmp_path / "stray.dcm").is_symlink()
