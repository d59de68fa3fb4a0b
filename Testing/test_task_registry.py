"""One place says what a task is (spineseg.tasks): a third task added in a test runs through the command line,
the job path, the writers and the batch program, none of which names a task; an unknown task is refused."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from spineseg import tasks
from spineseg.checks import check_input
from spineseg.cli import main
from spineseg.errors import EXIT_OK
from spineseg.io import read_volume, write_volume
from spineseg.jobs import run_job
from spineseg.model_store import save_model
from spineseg.networks.loaded import LoadedModel
from spineseg.volume import Volume, VolumeKind, affine_from_geometry

EXTENSION = Path(__file__).resolve().parents[1] / "SpineSegExtension"
sys.path.insert(0, str(EXTENSION))  # SpineSegLib, as the batch program finds it

from SpineSegLib import batch  # noqa: E402


# --- a toy task: voxels brighter than the model's threshold ----------------------------------------------------

class ThresholdNet(torch.nn.Module):
    """The toy network: one learnt number, the threshold."""

    def __init__(self, config: None = None) -> None:
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.zeros(()))


@dataclass(frozen=True)
class ThresholdSettings:
    network: None = None

    @classmethod
    def from_manifest(cls, manifest: dict) -> "ThresholdSettings":
        return cls()


class ThresholdModel(LoadedModel):
    pass


@dataclass(frozen=True)
class BrightResult:
    label_map: Volume
    warnings: list[str] = field(default_factory=list)

    def table(self) -> dict:
        return {"naming": None, "bright": [{"name": "bright", "voxels": int(self.label_map.array.sum())}]}

    @staticmethod
    def naming_summary(naming: dict) -> tuple[str, bool]:
        return "not named", False


def find_bright(volume: Volume, model: ThresholdModel, device: str = "cpu", progress=None,
                force_modality: bool = False) -> BrightResult:
    warnings = check_input(volume, "bright", force_modality)
    labels = (volume.array > model.network.threshold.item()).astype(np.uint8)
    return BrightResult(volume.with_array(labels, VolumeKind.LABEL), warnings)


def write_bright(image: Volume, result: BrightResult, folder: Path, names: list[str], source: str,
                 model: dict) -> None:
    from spineseg import writers

    writers.write_json(writers.result_table(result, source, model), folder / "bright.json")
    write_volume(result.label_map, folder / "bright.nii.gz")


@pytest.fixture
def bright_task(tmp_path):
    """The toy task registered, with a model of threshold 100 saved as its default; unregistered afterwards."""
    network = ThresholdNet()
    network.threshold.data.fill_(100.0)
    entry = save_model(network.state_dict(), {"task": "bright", "architecture": {"type": "ThresholdNet"},
                                              "input": {}}, tmp_path / "model", "bright-100")
    spec = tasks.TaskSpec(
        name="bright", label="Find bright voxels", help="find voxels brighter than a threshold", image="any image",
        items=("region", "regions"), dicom_modality="OT", output_names=("bright.nii.gz", "bright.json"),
        picture_name="", default_model=str(entry.manifest_path),
        input_checks=tasks.InputProfile(min_extent_mm=5.0, extent_refusal="too small: {extent} mm"),
        predictor=find_bright, result_type=BrightResult, writer=write_bright, model_class=ThresholdModel,
        settings_class=ThresholdSettings, network_class=ThresholdNet,
    )
    tasks.register(spec)
    yield spec
    tasks.unregister("bright")


@pytest.fixture
def image_file(tmp_path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 200, size=(12, 10, 8)).astype(np.int16)
    affine = affine_from_geometry((2.0, 1.5, 3.0), (10.0, -5.0, 7.0))
    path = tmp_path / "image.nii.gz"
    write_volume(Volume(array, affine, VolumeKind.INTENSITY), path)
    return path, array


def test_a_registered_task_runs_through_the_command_line_and_the_writers(bright_task, image_file, tmp_path,
                                                                         capsys):
    path, array = image_file
    out = tmp_path / "out"
    assert main(["bright", str(path), "-o", str(out), "--device", "cpu"]) == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["bright.json", "bright.nii.gz"]
    labels = read_volume(out / "bright.nii.gz", VolumeKind.LABEL)
    assert np.array_equal(labels.array, array > 100)  # the model's threshold, voxel for voxel
    assert np.allclose(labels.affine, read_volume(path).affine)
    document = json.loads((out / "bright.json").read_text())
    assert document["model"]["name"] == "bright-100" and len(document["model"]["sha256"]) == 64
    assert document["bright"] == [{"name": "bright", "voxels": int((array > 100).sum())}]
    assert document["coordinate_system"] == "RAS" and document["input"] == str(path)
    assert "found: 1 region (bright)" in capsys.readouterr().err
    assert main(["bright", str(path), "-o", str(out), "--device", "cpu"]) != EXIT_OK  # outputs in the way


def test_a_registered_task_runs_in_the_batch_program_and_is_checked_by_its_profile(bright_task, image_file,
                                                                                  tmp_path):
    path, array = image_file
    assert batch.main(["--task", "bright", "--input", str(path), "--output", str(tmp_path / "b"),
                       "--device", "cpu"]) == EXIT_OK
    assert np.array_equal(read_volume(tmp_path / "b" / "image" / "bright.nii.gz").array, array > 100)
    thin = tmp_path / "thin.nii.gz"
    write_volume(Volume(array[:, :, :2], np.eye(4), VolumeKind.INTENSITY), thin)  # 2 mm along one axis
    with pytest.raises(Exception, match=re.escape("too small: [12.0, 10.0, 2.0] mm")):
        run_job("bright", thin, tmp_path / "refused", device="cpu")
    assert not (tmp_path / "refused").exists()


def test_an_unknown_task_is_refused_by_name(tmp_path, image_file, capsys):
    path, _ = image_file
    with pytest.raises(ValueError, match="task must be one of vertebrae, discs; got 'canal'"):
        run_job("canal", path, tmp_path / "out")
    with pytest.raises(ValueError, match="one of vertebrae, discs"):
        tasks.get("bright")  # unregistered after its test
    with pytest.raises(SystemExit):
        main(["canal", str(path), "-o", str(tmp_path / "out")])
    assert "invalid choice: 'canal'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="built-in"):
        tasks.unregister("vertebrae")
    with pytest.raises(ValueError, match="registered already"):
        tasks.register(tasks.get("discs"))


# Where a task may be named: its own package, the registry, the enum of built-in tasks; training keeps its own
# table of task adapters (spineseg.training.tasks.ADAPTERS) and per-task data layouts.
ALLOWED = ("spineseg/tasks.py", "spineseg/choices.py", "spineseg/vertebrae/", "spineseg/discs/", "spineseg/training/")
# A task compared with a task (enum or name), a table keyed by tasks, a comparison with a bare task member.
BRANCH = re.compile(r"""task\s*(is not|is|==|!=)\s*(Task\.|["'])|\{\s*Task\.|Task\.\w+\s*:|\bis (not )?(VERTEBRAE|DISCS)\b""")


def test_no_task_branches_outside_the_registry_and_the_task_packages():
    found = []
    for path in sorted(EXTENSION.rglob("*.py")):
        relative = path.relative_to(EXTENSION).as_posix()
        if relative.startswith(ALLOWED):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line.split("#")[0]):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert found == [], "ask spineseg.tasks.get(task) instead:\n" + "\n".join(found)
    for branch in ("if task is Task.VERTEBRAE:", "if job.task == 'discs':", "{Task.DISCS: 'MR'}", "x is DISCS"):
        assert BRANCH.search(branch), branch  # the pattern finds what it looks for
