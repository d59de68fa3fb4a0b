"""One job layer: the CLI, the batch script and the Slicer logic write the same files, and --model works in each."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from spineseg.cli import main as cli_main
from spineseg.io import write_volume
from spineseg.model_store import BUNDLED_MODELS_DIR
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.phantoms.mri import make_mri_phantom

EXTENSION = Path(__file__).resolve().parents[1] / "SpineSegExtension"
sys.path.insert(0, str(EXTENSION))

from SpineSegLib import batch  # noqa: E402

PHANTOMS = {
    "vertebrae": lambda: make_ct_phantom([20, 21], spacing=(2.0, 2.0, 2.0)).image,
    "discs": lambda: make_mri_phantom([20, 21, 22], spacing=(4.0, 2.0, 2.0)).image,
}
BUNDLED = {"vertebrae": "vertebrae-ct-synth-v7", "discs": "discs-mri-synth-v3"}


def load_in_scene(path: Path):
    """A volume node read from a file the way Slicer's Add Data does (it keeps its storage node)."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module here has no MRML classes (install slicer-core)")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "input")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(node)
    return scene, node


def hide_matplotlib(folder: Path) -> str:
    """A PYTHONPATH entry under which ``import matplotlib`` fails, as on a stock Slicer."""
    package = folder / "matplotlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('matplotlib is not installed (hidden by the test)')\n")
    return str(folder)


@pytest.mark.parametrize("task", ["vertebrae", "discs"])
def test_cli_batch_and_slicer_logic_write_identical_json(task, tmp_path, monkeypatch):
    """Same input, same model given three ways (name, manifest path, weights path): byte-identical JSON.

    The Slicer logic's child runs with matplotlib hidden: a stock Slicer has none, and the module draws no PNG.
    """
    from SpineSegLib import handoff, process

    source = tmp_path / "in" / f"{task}-phantom.nii.gz"
    source.parent.mkdir()
    write_volume(PHANTOMS[task](), source)
    manifest = BUNDLED_MODELS_DIR / f"{BUNDLED[task]}.json"

    assert cli_main([task, str(source), "-o", str(tmp_path / "cli"), "--device", "cpu",
                     "--model", BUNDLED[task]]) == 0
    summary = batch.run_batch(source, tmp_path / "batch", task, "cpu", model=str(manifest))
    assert summary.done == [source.name.split(".")[0]], summary.text()

    scene, node = load_in_scene(source)
    monkeypatch.setenv("PYTHONPATH", hide_matplotlib(tmp_path / "hidden"))
    job = handoff.start_job(node, task, EXTENSION, "cpu", str(manifest.with_suffix(".safetensors")),
                            python_executable=sys.executable)
    try:
        assert job.process.wait(timeout=300) is process.ProcessState.SUCCEEDED, job.process.error_lines
        assert sorted(p.name for p in job.output_folder.iterdir()) == sorted(
            name for name in batch.output_names(task) if not name.endswith(".png"))
        from_cli = (tmp_path / "cli" / f"{task}.json").read_bytes()
        assert (tmp_path / "batch" / source.name.split(".")[0] / f"{task}.json").read_bytes() == from_cli
        assert (job.output_folder / f"{task}.json").read_bytes() == from_cli
        result = handoff.load_results(job)
        assert len(result.vertebrae if task == "vertebrae" else result.discs) >= 2
    finally:
        job.remove_files()
    assert b'"name": "%s"' % BUNDLED[task].encode() in from_cli and str(source).encode() in from_cli


@pytest.mark.parametrize("task", ["vertebrae", "discs"])
def test_unknown_or_escaping_model_names_are_refused_everywhere(task, tmp_path, capsys):
    source = tmp_path / "in.nii.gz"
    write_volume(PHANTOMS[task](), source)
    for model in ("no-such-model", "../Models/" + BUNDLED[task], os.fspath(tmp_path / "missing.json")):
        assert cli_main([task, str(source), "-o", str(tmp_path / "out"), "--model", model]) == 3
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and "not found" in error[0] and BUNDLED[task] in error[0], error
        assert batch.main(["--task", task, "--input", str(source), "--output", str(tmp_path / "b"),
                           "--model", model]) == 3
        assert "not found" in capsys.readouterr().err
    other = "discs" if task == "vertebrae" else "vertebrae"
    assert cli_main([task, str(source), "-o", str(tmp_path / "out"), "--model", BUNDLED[other]]) == 3
    assert f"is for task '{other}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "b").exists()
