"""The batch program (SpineSegLib/batch.py) under plain Python: folder mode, skipping, failures, file contents read back by MRML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXTENSION = Path(__file__).resolve().parents[1] / "SpineSegExtension"
sys.path.insert(0, str(EXTENSION))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from SpineSegLib import batch  # noqa: E402  (imports no slicer at module level)
from spineseg.io import read_volume, write_volume  # noqa: E402
from spineseg.jobs import output_names  # noqa: E402
from spineseg.phantoms.ct import make_ct_phantom  # noqa: E402
from spineseg.phantoms.mri import make_mri_phantom  # noqa: E402
from spineseg.results import DiscRecord, DiscsResult, VertebraeResult, VertebraRecord  # noqa: E402
from spineseg.volume import Volume, VolumeKind, affine_from_geometry  # noqa: E402


def needs_slicer_core():
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module here has no MRML classes (install slicer-core)")


def fake_vertebrae(volume: Volume, model=None, device="auto", progress=None, force_modality=False) -> VertebraeResult:
    """Fast stand-in for segment_vertebrae: bright voxels, labelled L1, L2, L3 by thirds of k."""
    progress(0.5, "thresholding")
    labels = np.zeros(volume.shape, np.uint8)
    bright = volume.array > 500
    thirds = np.array_split(np.arange(volume.shape[2]), 3)
    for level, ks in zip((22, 21, 20), thirds):
        labels[:, :, ks] = np.where(bright[:, :, ks], level, 0)
    label_map = Volume(labels, volume.affine, VolumeKind.LABEL)
    records = [VertebraRecord(level, int((labels == level).sum()), 0.0, 0.9, (0.0, 0.0, 0.0)) for level in (20, 21, 22)]
    return VertebraeResult(label_map, records)


def fake_discs(volume: Volume, model=None, device="auto", progress=None, force_modality=False) -> DiscsResult:
    """Fast stand-in for label_discs: three discs spaced along k through the image centre."""
    centre = (np.array(volume.shape) - 1) / 2
    discs = []
    for n, number in enumerate((20, 21, 22)):
        ijk = centre + np.array([0.0, 0.0, (n - 1) * 3.0])
        discs.append(DiscRecord(number, tuple(float(x) for x in volume.ijk_to_ras(ijk)[0]), 0.9 - 0.1 * n))
    return DiscsResult(discs)


def write_case(path: Path, seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 1000, (16, 14, 12)).astype(np.int16)
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    volume = Volume(array, affine_from_geometry((0.8, 1.1, 2.5), (20.0, -10.0, 50.0 + seed), direction))
    write_volume(volume, path)
    return volume


@pytest.fixture
def cases(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_case(folder / "alpha.nii.gz", 1)
    write_case(folder / "beta.nrrd", 2)
    (folder / "broken.nii.gz").write_bytes(b"this is not an image")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_folder_mode_writes_reads_back_skips_and_reports_failures(cases, tmp_path):
    needs_slicer_core()
    import slicerio
    from SpineSegLib.scene import create_headless_context
    from test_slicer_glue import assert_mrk_json_matches, assert_slicerio_matches

    context = create_headless_context()
    out = tmp_path / "out"
    summary = batch.run_batch(cases, out, "vertebrae", task_function=fake_vertebrae)
    assert summary.done == ["alpha", "beta"]
    assert list(summary.failed) == ["broken"] and "cannot read" in summary.failed["broken"]
    assert summary.exit_code == 2  # every failure was a refused input, as `spineseg` exits
    assert "2 done, 0 skipped, 1 failed" in summary.text()
    assert sorted(p.name for p in (out / "alpha").iterdir()) == sorted(output_names("vertebrae"))
    for name, source in (("alpha", "alpha.nii.gz"), ("beta", "beta.nrrd")):
        expected = fake_vertebrae(read_volume(cases / source), progress=lambda f, m: None).label_map
        assert_slicerio_matches(slicerio.read_segmentation(str(out / name / "vertebrae.seg.nrrd")), expected)
        written = read_volume(out / name / "vertebrae.nii.gz")
        assert np.array_equal(written.array, expected.array)
        table = json.loads((out / name / "vertebrae.json").read_text())
        assert [v["name"] for v in table["vertebrae"]] == ["L1", "L2", "L3"]
        assert table["input"] == str(cases / source) and table["model"]["name"] == "vertebrae-ct-synth-v7"

    again = batch.run_batch(cases, out, "vertebrae", task_function=fake_vertebrae)
    assert again.skipped == ["alpha", "beta"] and again.done == [] and list(again.failed) == ["broken"]

    discs = batch.run_batch(cases / "alpha.nii.gz", out, "discs", task_function=fake_discs)
    assert discs.done == ["alpha"] and discs.exit_code == 0
    expected_discs = fake_discs(read_volume(cases / "alpha.nii.gz"))
    assert_mrk_json_matches(out / "alpha" / "discs.mrk.json", expected_discs)
    loaded = context.scene.GetNodeByID(context.markups_logic.LoadMarkups(str(out / "alpha" / "discs.mrk.json"), "x"))
    assert loaded.GetLocked()
    assert [loaded.GetNthControlPointLabel(i) for i in range(3)] == ["T12/L1", "L1/L2", "L2/L3"]
    assert json.loads((out / "alpha" / "discs.json").read_text())["discs"][0]["name"] == "T12/L1"


def test_a_failing_task_does_not_stop_the_batch_and_leaves_no_partial_files(cases, tmp_path):
    needs_slicer_core()

    def flaky(volume, **options):
        if volume.array[0, 0, 0] == read_volume(cases / "alpha.nii.gz").array[0, 0, 0]:
            raise RuntimeError("out of memory")
        return fake_vertebrae(volume, **options)

    summary = batch.run_batch(cases, tmp_path / "out", "vertebrae", task_function=flaky)
    assert summary.done == ["beta"]
    assert summary.failed["alpha"] == "RuntimeError: out of memory"
    assert not (tmp_path / "out" / "alpha").exists() or not any((tmp_path / "out" / "alpha").iterdir())


def test_find_cases(tmp_path, cases):
    assert [c.name for c in batch.find_cases(cases)] == ["alpha", "beta", "broken"]
    assert batch.find_cases(cases / "beta.nrrd") == [batch.Case("beta", cases / "beta.nrrd")]
    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"")
    assert batch.find_cases(dicom) == [batch.Case("series", dicom)]
    (cases / "alpha.nrrd").write_bytes(b"")
    with pytest.raises(ValueError, match="same case name: alpha"):
        batch.find_cases(cases)
    with pytest.raises(ValueError, match="does not exist"):
        batch.find_cases(tmp_path / "missing")
    with pytest.raises(ValueError, match="task"):
        batch.run_batch(cases, tmp_path, "ribs")


def test_arguments_accept_slicers_separator():
    options = batch.parse_arguments(["--", "--task", "discs", "--input", "a", "--output", "b", "--device", "cpu"])
    assert (options.task, options.input, options.output, options.device, options.model) == ("discs", "a", "b", "cpu", None)
    with pytest.raises(SystemExit):
        batch.parse_arguments(["--task", "ribs", "--input", "a", "--output", "b"])


def test_main_in_process_with_injected_task(cases, tmp_path, monkeypatch, capsys):
    needs_slicer_core()
    run_batch = batch.run_batch
    monkeypatch.setattr(batch, "run_batch", lambda *args, **options: run_batch(*args, **options, task_function=fake_discs))
    code = batch.main(["--task", "discs", "--input", str(cases / "beta.nrrd"), "--output", str(tmp_path / "o")])
    assert code == 0
    assert "1 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert (tmp_path / "o" / "beta" / "discs.mrk.json").exists()


BATCH_SCRIPT = EXTENSION / "SpineSegLib" / "batch.py"  # the path docs/slicer.md and the README give


def run_script(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """The script as a user runs it, from another folder, with a clean sys.path."""
    return subprocess.run(
        [sys.executable, str(BATCH_SCRIPT), *arguments], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_script_runs_under_plain_python(tmp_path, cases):
    """The documented command works from any folder; a missing input ends with exit code 2 and one line."""
    needs_slicer_core()
    result = run_script("--task", "discs", "--input", str(tmp_path / "missing.nii.gz"), "--output", str(tmp_path / "o"),
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"SpineSeg batch: error: --input {tmp_path / 'missing.nii.gz'} does not exist"]
    usage = run_script("--task", "ribs", "--input", "a", "--output", "b", cwd=tmp_path)
    assert usage.returncode == 2 and "invalid choice: 'ribs'" in usage.stderr
    assert run_script("--help", cwd=tmp_path).returncode == 0


def test_every_failure_of_main_is_an_exit_code_and_one_line(cases, tmp_path, monkeypatch, capsys):
    """Errors outside a case (a missing dependency, a bug, Ctrl-C) never escape main: Slicer must exit."""
    arguments = ["--task", "discs", "--input", str(cases / "beta.nrrd"), "--output", str(tmp_path / "o")]
    expected = [
        (ImportError("No module named 'torch'"), 1, "SpineSeg batch: error: ImportError: No module named 'torch'"),
        (AttributeError("no scene"), 1, "SpineSeg batch: error: AttributeError: no scene"),
        (KeyboardInterrupt(), 130, "SpineSeg batch: interrupted before any case ran"),
    ]
    for error, code, line in expected:
        def failing_run(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(batch, "run_batch", failing_run)
        assert batch.main(arguments) == code
        assert capsys.readouterr().err.strip().splitlines() == [line]


@pytest.mark.parametrize("task", ["vertebrae", "discs"])
def test_real_core_functions_on_a_phantom(tmp_path, task):
    """The batch with the core's own task function and bundled model on a small phantom."""
    needs_slicer_core()
    if task == "vertebrae":
        image = make_ct_phantom([20, 21], spacing=(2.0, 2.0, 2.0)).image
    else:
        image = make_mri_phantom([20, 21, 22], spacing=(4.0, 2.0, 2.0)).image
    (tmp_path / "in").mkdir()
    write_volume(image, tmp_path / "in" / "phantom.nii.gz")
    summary = batch.run_batch(tmp_path / "in", tmp_path / "out", task, device="cpu")
    assert summary.done == ["phantom"], summary.text()
    for name in output_names(task):
        assert (tmp_path / "out" / "phantom" / name).exists()



def test_ctrl_c_prints_the_summary_so_far_and_exits_130(cases, tmp_path, monkeypatch, capsys):
    calls = []

    def interrupted_at_the_second_case(volume, **kwargs):
        calls.append(volume)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fake_vertebrae(volume, **kwargs)

    monkeypatch.setattr("spineseg.jobs._predictor", lambda spec: interrupted_at_the_second_case)
    out = tmp_path / "out"
    assert batch.main(["--task", "vertebrae", "--input", str(cases), "--output", str(out), "--device", "cpu"]) == 130
    assert "1 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["alpha"]  # beta left nothing, broken never started


def test_a_case_whose_output_folder_cannot_be_written_fails_before_predicting(cases, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "alpha").write_text("a file where the case folder goes")

    def predicted(volume, **kwargs):
        raise AssertionError("predicted a case whose outputs cannot be written")

    summary = batch.run_batch(cases / "alpha.nii.gz", out, "vertebrae", device="cpu", task_function=predicted)
    assert summary.refused == ["alpha"] and "is not a folder" in summary.failed["alpha"]


@pytest.fixture
def dicom_cases(tmp_path) -> Path:
    """Two DICOM cases: 'two' holds two CT series (ambiguous), 'one' a single CT series."""
    from test_dicom_series import write_series

    folder = tmp_path / "dicom"
    folder.mkdir()
    write_series(folder / "two", "1.2.3.1", "CT", 8, description="bone kernel")
    write_series(folder / "two", "1.2.3.2", "CT", 9, description="soft kernel")
    write_series(folder / "one", "1.2.3.5", "CT", 7)
    return folder


@pytest.fixture
def batch_main(monkeypatch):
    """``batch.main`` for vertebrae with the fast stand-in."""
    run_batch = batch.run_batch
    monkeypatch.setattr(batch, "run_batch",
                        lambda *args, **options: run_batch(*args, **options, task_function=fake_vertebrae))
    return lambda *arguments: batch.main(["--task", "vertebrae", *arguments])


def test_series_picks_one_of_several_dicom_series_as_in_the_cli(dicom_cases, tmp_path, batch_main, capsys):
    out = tmp_path / "out"
    assert batch_main("--input", str(dicom_cases), "--output", str(out)) == 2  # the one failure: refused
    report = capsys.readouterr().out
    assert "1 done, 0 skipped, 1 failed" in report
    (failure,) = [line for line in report.splitlines() if "FAILED" in line]
    assert "FAILED two:" in failure and "pick one with --series UID" in failure and "1.2.3.2 (CT, 'soft kernel'" in failure
    assert not (out / "two").exists()

    assert batch_main("--input", str(dicom_cases), "--output", str(out), "--series", "1.2.3.2") == 0
    assert "1 done, 1 skipped, 0 failed" in capsys.readouterr().out
    assert read_volume(out / "two" / "vertebrae.nii.gz", VolumeKind.LABEL).shape == (8, 8, 9)  # the soft kernel's grid


@pytest.mark.parametrize("single", [False, True], ids=["folder of cases", "one DICOM folder"])
def test_a_series_no_case_holds_exits_2_with_one_line_before_any_case(dicom_cases, tmp_path, batch_main, capsys,
                                                                         single):
    source = dicom_cases / "two" if single else dicom_cases
    arguments = ["--input", str(source), "--output", str(tmp_path / "out"), "--series", "9.9"]
    assert batch_main(*arguments) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    if single:  # the words of `spineseg vertebrae FOLDER --series 9.9`
        from spineseg.cli import main as cli_main

        assert cli_main(["vertebrae", str(source), "-o", str(tmp_path / "cli"), "--series", "9.9"]) == 2
        assert line == "SpineSeg batch: " + capsys.readouterr().err.strip().removeprefix("spineseg: ")
    else:
        assert line == f"SpineSeg batch: error: no DICOM folder in {source} holds series 9.9 (--series)"
    assert captured.out == "" and not (tmp_path / "out").exists()
