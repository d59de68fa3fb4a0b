"""The Slicer module's logic driven as the panel drives it, on slicer-core's real MRML classes.

Start the task (the input node is written to a file and ``spineseg TASK`` runs in a
background process with the bundled model), wait for the process, import the
results into the scene; then check what a user would see: segment names,
terminology, label values, geometry against the input node, the disc points.
The phantoms are held out from training (seed 1000) and named right by the
bundled models, as in the module's self-test.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpineSegExtension"))

from spineseg.choices import Task  # noqa: E402
from spineseg.labels import disc_name, vertebra_segment_name, vertebra_terminology  # noqa: E402
from spineseg import tasks  # noqa: E402
from spineseg.model_store import find_model, list_models, read_card  # noqa: E402

from conftest import require_real_data  # noqa: E402


@pytest.fixture
def context():
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module here has no MRML classes (install slicer-core)")
    from SpineSegLib.scene import create_headless_context

    return create_headless_context()


def run_as_the_panel(context, volume, task: Task, **import_options):
    """Start, wait, import: what the panel's Apply button and timer do. Returns (output node, input node,
    the job's JSON record, the label map the job wrote or None, the status line the panel shows)."""
    from SpineSegLib.logic import TaskLogic
    from SpineSegLib.volumes import node_from_volume
    from spineseg.io import read_volume
    from spineseg.volume import VolumeKind

    input_node = node_from_volume(context.scene, volume, "Phantom")
    logic = TaskLogic(context, python_executable=sys.executable)
    job = logic.startTask(input_node, task, device="cpu")
    try:
        logic.waitForJob(job, timeout=600)
        output = logic.importResults(job, **import_options)
        status = logic.statusText(logic.runSummary(job), job.seconds)
        record = json.loads((job.output_folder / f"{task.value}.json").read_text())
        labels = read_volume(job.output_folder / "vertebrae.nii.gz", VolumeKind.LABEL) if task is Task.VERTEBRAE else None
    finally:
        job.remove_files()
    assert not job.folder.exists()
    return output, input_node, record, labels, status


def test_vertebrae_run_in_the_background_become_named_coded_segments_on_the_input_grid(context):
    import slicer
    from SpineSegLib.segmentations import label_map_from_segmentation
    from SpineSegLib.volumes import ijk_to_ras_of_node
    from spineseg.phantoms.ct import make_ct_phantom

    phantom = make_ct_phantom(levels=[17, 18, 19, 20, 21, 22], spacing=(1.5, 1.5, 1.5), seed=1000)
    output, input_node, record, labels, status = run_as_the_panel(context, phantom.image, Task.VERTEBRAE,
                                                                  show3D=False)
    caveat = read_card(find_model("vertebrae-ct-synth-v7", "vertebrae")).caveat
    assert re.fullmatch(r"Done in \d+ s: 6 vertebrae \(T10-L3\), named by the last rib \(on T12\)\. "
                        r"Check every result: " + re.escape(caveat), status), status

    segmentation = output.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == [vertebra_segment_name(level) for level in range(17, 23)]  # T10 ... L3, head to foot
    for level in range(17, 23):
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(vertebra_segment_name(level)))
        assert segment.GetLabelValue() == level
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetTypeObject().GetCodeValue() == vertebra_terminology(level).value
    assert output.GetNodeReference(output.GetReferenceImageGeometryReferenceRole()) is input_node
    exported = label_map_from_segmentation(context.scene, context.segmentations_logic, output, input_node)
    np.testing.assert_allclose(exported.affine, ijk_to_ras_of_node(input_node), atol=1e-6)
    np.testing.assert_allclose(exported.affine, phantom.image.affine, atol=1e-6)
    assert np.array_equal(exported.array, labels.array)  # voxel for voxel what the job wrote
    assert [item["number"] for item in record["vertebrae"]] == list(range(17, 23))
    inside = (exported.array > 0) & (phantom.labels.array > 0)
    assert np.mean(exported.array[inside] == phantom.labels.array[inside]) > 0.95


def test_discs_run_in_the_background_become_the_points_the_job_wrote(context):
    from slicer.util import arrayFromMarkupsControlPoints
    from spineseg.phantoms.mri import make_mri_phantom

    phantom = make_mri_phantom(contrast="T2", seed=1000)
    output, _, record, _, status = run_as_the_panel(context, phantom.image, Task.DISCS)
    assert "8 discs (T10/T11-L5/S1), names counted from sacrum." in status
    assert status.endswith(read_card(find_model(None, "discs")).caveat)

    labels = [output.GetNthControlPointLabel(i) for i in range(output.GetNumberOfControlPoints())]
    assert labels == [disc_name(number) for number in sorted(phantom.disc_points)]
    assert labels == [item["name"] for item in record["discs"]]
    np.testing.assert_allclose(arrayFromMarkupsControlPoints(output), [d["position_ras"] for d in record["discs"]],
                               atol=1e-3)
    truth = np.array([phantom.disc_points[number] for number in sorted(phantom.disc_points)])
    assert np.max(np.abs(arrayFromMarkupsControlPoints(output)[:, 2] - truth[:, 2])) < 8.0  # head to foot, mm
    assert output.GetLocked()


@pytest.mark.parametrize("task", list(Task))
def test_the_model_list_shows_every_bundled_model_with_its_card_summary_and_the_caveat_whatever_is_chosen(task):
    from SpineSegLib.logic import TaskLogic

    choices = TaskLogic.modelChoices(task)
    assert [choice.name for choice in choices][0] == tasks.get(task).default_model
    assert sorted(choice.name for choice in choices) == sorted(entry.name for entry in list_models(task))
    for choice in choices:
        card = read_card(find_model(choice.name, task))
        assert choice.summary == card.summary and choice.summary in choice.text
        assert TaskLogic.modelCaveat(choice.name, task) == f"Check every result: {card.caveat}"
    # the default, left empty or typed out, keeps its caveat (it used to vanish once the field named a model)
    assert TaskLogic.modelCaveat("", task) == TaskLogic.modelCaveat(tasks.get(task).default_model, task) != ""


def test_a_series_of_a_dicom_folder_loads_as_the_input_volume(context):
    from SpineSegLib.logic import TaskLogic
    from SpineSegLib.volumes import volume_from_node
    from spineseg.io import list_dicom_series, read_volume

    folder = require_real_data("ct_totalseg_example", "dicom")
    series = list_dicom_series(folder)
    node = TaskLogic(context).loadDicomSeries(folder, series[0].uid)
    expected = read_volume(folder, series=series[0].uid)
    loaded = volume_from_node(node)
    assert np.array_equal(loaded.array, expected.array)
    np.testing.assert_allclose(loaded.affine, expected.affine, atol=1e-4)
