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
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpineSegExtension"))

from spineseg.choices import Task  # noqa: E402
from spineseg.labels import disc_name, vertebra_segment_name, vertebra_terminology  # noqa: E402


@pytest.fixture
def context():
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module here has no MRML classes (install slicer-core)")
    from SpineSegLib.scene import create_headless_context

    return create_headless_context()


def run_as_the_panel(context, volume, task: Task, **import_options):
    """Start, wait, import: what the panel's Apply button and timer do. Returns (output node, input node,
    the job's JSON record, the label map the job wrote or None)."""
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
        record = json.loads((job.output_folder / f"{task.value}.json").read_text())
        labels = read_volume(job.output_folder / "vertebrae.nii.gz", VolumeKind.LABEL) if task is Task.VERTEBRAE else None
    finally:
        job.remove_files()
    assert not job.folder.exists()
    return output, input_node, record, labels


def test_vertebrae_run_in_the_background_become_named_coded_segments_on_the_input_grid(context):
    import slicer
    from SpineSegLib.segmentations import label_map_from_segmentation
    from SpineSegLib.volumes import ijk_to_ras_of_node
    from spineseg.phantoms.ct import make_ct_phantom

    phantom = make_ct_phantom(levels=[17, 18, 19, 20, 21, 22], spacing=(1.5, 1.5, 1.5), seed=1000)
    output, input_node, record, labels = run_as_the_panel(context, phantom.image, Task.VERTEBRAE, show3D=False)

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
    assert [item["level"] for item in record["vertebrae"]] == list(range(17, 23))
    inside = (exported.array > 0) & (phantom.labels.array > 0)
    assert np.mean(exported.array[inside] == phantom.labels.array[inside]) > 0.95


def test_discs_run_in_the_background_become_the_points_the_job_wrote(context):
    from slicer.util import arrayFromMarkupsControlPoints
    from spineseg.phantoms.mri import make_mri_phantom

    phantom = make_mri_phantom(contrast="T2", seed=1000)
    output, _, record, _ = run_as_the_panel(context, phantom.image, Task.DISCS)

    labels = [output.GetNthControlPointLabel(i) for i in range(output.GetNumberOfControlPoints())]
    assert labels == [disc_name(number) for number in sorted(phantom.disc_points)]
    assert labels == [item["label"] for item in record["discs"]]
    np.testing.assert_allclose(arrayFromMarkupsControlPoints(output), [d["position_ras"] for d in record["discs"]],
                               atol=1e-3)
    truth = np.array([phantom.disc_points[number] for number in sorted(phantom.disc_points)])
    assert np.max(np.abs(arrayFromMarkupsControlPoints(output)[:, 2] - truth[:, 2])) < 8.0  # head to foot, mm
    assert output.GetLocked()
