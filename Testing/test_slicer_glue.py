"""The MRML glue (SpineSegLib) against slicer-core's real MRML classes, and the background process runner."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpineSegExtension"))

from SpineSegLib import dependencies, process  # noqa: E402  (pure: no slicer needed)
from spineseg.labels import (  # noqa: E402
    VERTEBRA_NAMES,
    disc_name,
    vertebra_colour,
    vertebra_segment_name,
    vertebra_terminology,
)
from spineseg.results import DiscRecord, DiscsResult, VertebraeResult, VertebraRecord  # noqa: E402
from spineseg.volume import Volume, VolumeKind, affine_from_geometry  # noqa: E402


def _slicer():
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module here has no MRML classes (install slicer-core)")
    return slicer


@pytest.fixture
def context():
    _slicer()
    from SpineSegLib.scene import create_headless_context

    return create_headless_context()


def oblique_affine() -> np.ndarray:
    """Rotated about two axes, i axis flipped, anisotropic spacing, off-centre origin."""
    a, b = np.deg2rad(30), np.deg2rad(-20)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return affine_from_geometry((0.7, 1.3, 2.5), (12.5, -40.0, 310.0), rz @ rx @ np.diag([-1.0, 1.0, 1.0]))


def spine_result(affine: np.ndarray, shape=(30, 24, 18), levels=(20, 21, 22, 26)) -> tuple[Volume, VertebraeResult]:
    """An image and a label map with one box per level along k (the last level touches the edge)."""
    rng = np.random.default_rng(3)
    image = Volume(rng.integers(-200, 1200, shape).astype(np.int16), affine)
    labels = np.zeros(shape, np.uint8)
    for n, level in enumerate(levels):
        labels[3 + n : 20 + n, 4:18, 4 * n + 1 : 4 * n + 4] = level
    labels[0, 0, 0] = levels[0]  # a corner voxel: extents must not be cropped
    return image, VertebraeResult(Volume(labels, affine, VolumeKind.LABEL), [])


def segment_masks(context, segmentation_node, reference_node) -> dict[str, np.ndarray]:
    """Each segment exported on its own in the reference grid, as an [i, j, k] boolean array."""
    import vtk
    from slicer.util import arrayFromVolume

    segmentation = segmentation_node.GetSegmentation()
    masks = {}
    for index in range(segmentation.GetNumberOfSegments()):
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentation.GetNthSegmentID(index))
        node = context.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        assert context.segmentations_logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, node, reference_node)
        masks[segmentation.GetNthSegment(index).GetName()] = arrayFromVolume(node).transpose(2, 1, 0) > 0
        context.scene.RemoveNode(node)
    return masks


# --- volumes ----------------------------------------------------------------------------------


def test_volume_node_round_trip_keeps_ijk_order_and_geometry(context):
    from slicer.util import arrayFromVolume
    from SpineSegLib.volumes import node_from_volume, volume_from_node

    image, _ = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    assert arrayFromVolume(node).shape == image.shape[::-1]  # Slicer: [k, j, i]
    assert arrayFromVolume(node)[5, 3, 2] == image.array[2, 3, 5]
    back = volume_from_node(node)
    assert back.kind is VolumeKind.INTENSITY
    assert np.array_equal(back.array, image.array)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-9)
    # the voxel centre in RAS agrees with Slicer's own IJK->RAS mapping
    ras = [0.0, 0.0, 0.0, 1.0]
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    matrix.MultiplyPoint([2.0, 3.0, 5.0, 1.0], ras)
    np.testing.assert_allclose(ras[:3], back.ijk_to_ras([2, 3, 5])[0], atol=1e-9)


def test_volume_from_node_rejects_non_volumes(context):
    from SpineSegLib.volumes import volume_from_node

    with pytest.raises(ValueError, match="scalar volume node"):
        volume_from_node(None)
    empty = context.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="no image data"):
        volume_from_node(empty)


# --- segmentations ---------------------------------------------------------------------------


def test_segmentation_matches_label_map_voxel_for_voxel_on_oblique_grid(context):
    from SpineSegLib.segmentations import label_map_from_segmentation, segmentation_from_result
    from SpineSegLib.volumes import node_from_volume

    image, result = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    segmentation_node = segmentation_from_result(context.scene, context.segmentations_logic, result, node)
    masks = segment_masks(context, segmentation_node, node)
    assert set(masks) == {vertebra_segment_name(level) for level in (20, 21, 22, 26)}
    for level in (20, 21, 22, 26):
        assert np.array_equal(masks[vertebra_segment_name(level)], result.label_map.array == level), level
    exported = label_map_from_segmentation(context.scene, context.segmentations_logic, segmentation_node, node)
    assert np.array_equal(exported.array, result.label_map.array)


def test_segments_have_names_colours_terminology_and_label_values(context):
    import slicer
    from SpineSegLib.segmentations import segmentation_from_result
    from SpineSegLib.volumes import node_from_volume

    image, result = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    segmentation = segmentation_from_result(context.scene, context.segmentations_logic, result, node).GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["L1 vertebra", "L2 vertebra", "L3 vertebra", "Sacrum"]
    for level in (20, 21, 22, 26):
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(vertebra_segment_name(level)))
        np.testing.assert_allclose(segment.GetColor(), vertebra_colour(level), atol=1e-6)
        assert segment.GetLabelValue() == level
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        code = vertebra_terminology(level)
        assert entry.GetTypeObject().GetCodeValue() == code.value
        assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeMeaning() == code.meaning
        assert entry.GetCategoryObject().GetCodeValue() == "123037004"


def test_terminology_string_matches_slicers_own_serialiser():
    slicer = _slicer()
    from spineseg.labels import TERMINOLOGY_CONTEXT, slicer_terminology_entry

    for level in VERTEBRA_NAMES:
        code = vertebra_terminology(level)
        modifier = code.modifier or type(code)("", "", "")
        expected = slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
            TERMINOLOGY_CONTEXT,
            "123037004", "SCT", "Anatomical Structure",
            code.value, code.scheme, code.meaning,
            modifier.value, modifier.scheme, modifier.meaning,
            "Anatomic codes - DICOM master list", "", "", "", "", "", "",
        )  # fmt: skip
        assert slicer_terminology_entry(code) == expected
    assert {vertebra_terminology(level).modifier.value for level in (25, 28)} == {"L6", "T13"}


# --- terminology -------------------------------------------------------------------------------


def loaded_terminology():
    """SpineSeg's context as slicer-core's terminologies logic holds it after the glue loaded the shipped file.

    Returns the context name and its entries: (category, type, type modifier) codes, each
    (scheme, value), mapped to (3dSlicerLabel, recommended RGB 0-255), read back through the logic.
    """
    slicer = _slicer()
    from SpineSegLib.terminology import load_terminology

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    name = load_terminology(logic)
    assert logic.IsTerminologyContextLoaded(name)
    assert load_terminology(logic) == name  # a second call loads nothing new
    entries = {}
    for c in range(logic.GetNumberOfCategoriesInTerminology(name)):
        category = slicer.vtkSlicerTerminologyCategory()
        assert logic.GetNthCategoryInTerminology(name, c, category)
        key = (category.GetCodingSchemeDesignator(), category.GetCodeValue())
        for n in range(logic.GetNumberOfTypesInTerminologyCategory(name, category)):
            item = slicer.vtkSlicerTerminologyType()
            assert logic.GetNthTypeInTerminologyCategory(name, category, n, item)
            type_key = (item.GetCodingSchemeDesignator(), item.GetCodeValue())
            entries[key, type_key, ("", "")] = (item.GetSlicerLabel(), tuple(item.GetRecommendedDisplayRGBValue()))
            for m in range(logic.GetNumberOfTypeModifiersInTerminologyType(name, category, item) if item.GetHasModifiers() else 0):
                modifier = slicer.vtkSlicerTerminologyType()
                assert logic.GetNthTypeModifierInTerminologyType(name, category, item, m, modifier)
                modifier_key = (modifier.GetCodingSchemeDesignator(), modifier.GetCodeValue())
                entries[key, type_key, modifier_key] = (modifier.GetSlicerLabel(), tuple(modifier.GetRecommendedDisplayRGBValue()))
    return name, entries


def terminology_entry_in(name: str, entries: dict, serialised: str) -> tuple[str, tuple]:
    """The (label, colour) of the entry a segment or node refers to; fails unless it is in SpineSeg's context."""
    import slicer

    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(serialised, entry)
    assert entry.GetTerminologyContextName() == name
    key = tuple(
        (part.GetCodingSchemeDesignator() or "", part.GetCodeValue() or "")
        for part in (entry.GetCategoryObject(), entry.GetTypeObject(), entry.GetTypeModifierObject())
    )
    assert key in entries, f"not in the SpineSeg terminology: {serialised}"
    return entries[key]


def test_terminology_file_lists_every_level_and_the_disc_with_the_project_codes_and_colours():
    from spineseg.anatomy import HEAD_TO_FOOT
    from spineseg.labels import INTERVERTEBRAL_DISC, TERMINOLOGY_CONTEXT, slicer_terminology_entry

    name, entries = loaded_terminology()
    assert name == TERMINOLOGY_CONTEXT
    labels = {label for label, _ in entries.values()}
    expected = {vertebra_segment_name(level) for level in HEAD_TO_FOOT}
    assert expected <= labels and len(expected) == 27  # C1-C7, T1-T13, L1-L6, sacrum
    for level in HEAD_TO_FOOT:
        label, colour = terminology_entry_in(name, entries, slicer_terminology_entry(vertebra_terminology(level)))
        assert label == vertebra_segment_name(level)
        np.testing.assert_allclose(np.array(colour) / 255, vertebra_colour(level), atol=0.5 / 255)
    assert terminology_entry_in(name, entries, slicer_terminology_entry(INTERVERTEBRAL_DISC))[0] == "intervertebral disc"
    with pytest.raises(AssertionError, match="not in the SpineSeg terminology"):
        terminology_entry_in(name, entries, slicer_terminology_entry(type(INTERVERTEBRAL_DISC)("SCT", "1234", "Rib")))


def test_every_segment_and_point_list_the_glue_writes_refers_to_the_spineseg_terminology(context):
    from spineseg.anatomy import HEAD_TO_FOOT
    from spineseg.labels import DISC_COLOUR
    from SpineSegLib.markups import markups_from_discs
    from SpineSegLib.segmentations import segmentation_from_result
    from SpineSegLib.volumes import node_from_volume

    name, entries = loaded_terminology()
    levels = tuple(HEAD_TO_FOOT)
    image, result = spine_result(oblique_affine(), shape=(30, 24, 4 * len(levels) + 4), levels=levels)
    node = node_from_volume(context.scene, image, "CT")
    segmentation = segmentation_from_result(context.scene, context.segmentations_logic, result, node).GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(levels)
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        label, colour = terminology_entry_in(name, entries, segment.GetTerminology())
        assert label == segment.GetName()
        np.testing.assert_allclose(np.array(colour) / 255, segment.GetColor(), atol=0.5 / 255)

    import slicer

    points = markups_from_discs(context.scene, disc_result(), node)
    serialised = slicer.vtkSlicerTerminologiesModuleLogic.GetTerminologyEntryAsString(points)
    label, colour = terminology_entry_in(name, entries, serialised)
    assert label == "intervertebral disc"
    np.testing.assert_allclose(points.GetDisplayNode().GetSelectedColor(), DISC_COLOUR)
    np.testing.assert_allclose(np.array(colour) / 255, DISC_COLOUR, atol=0.5 / 255)


def test_segmentation_reference_geometry_is_the_input_volume(context):
    import slicer
    from SpineSegLib.segmentations import segmentation_from_result
    from SpineSegLib.volumes import node_from_volume

    image, result = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    segmentation_node = segmentation_from_result(context.scene, context.segmentations_logic, result, node)
    geometry = segmentation_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    assert geometry  # set from the volume node
    assert segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole()) is node


def test_existing_nodes_are_untouched_unless_chosen_as_output(context):
    from SpineSegLib.segmentations import segmentation_from_result
    from SpineSegLib.volumes import node_from_volume

    image, result = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    other = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CT vertebrae")
    other.GetSegmentation().AddEmptySegment("mine")
    created = segmentation_from_result(context.scene, context.segmentations_logic, result, node)
    assert created is not other and created.GetName() != "CT vertebrae"
    assert other.GetSegmentation().GetNumberOfSegments() == 1
    reused = segmentation_from_result(context.scene, context.segmentations_logic, result, node, segmentation_node=other)
    assert reused is other
    names = {other.GetSegmentation().GetNthSegment(i).GetName() for i in range(other.GetSegmentation().GetNumberOfSegments())}
    assert names == {"L1 vertebra", "L2 vertebra", "L3 vertebra", "Sacrum"}


def test_empty_result_gives_empty_segmentation_and_no_leftover_nodes(context):
    from SpineSegLib.segmentations import segmentation_from_result
    from SpineSegLib.volumes import node_from_volume

    image, _ = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    colour_tables = context.scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems()
    empty = VertebraeResult(Volume(np.zeros(image.shape, np.uint8), image.affine, VolumeKind.LABEL), [])
    segmentation_node = segmentation_from_result(context.scene, context.segmentations_logic, empty, node)
    assert segmentation_node.GetSegmentation().GetNumberOfSegments() == 0
    assert context.scene.GetNodesByName("SpineSegTemporaryLabels").GetNumberOfItems() == 0
    assert context.scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems() == colour_tables


def test_outputs_follow_the_inputs_parent_transform(context):
    from SpineSegLib.markups import markups_from_discs
    from SpineSegLib.segmentations import segmentation_from_result
    from SpineSegLib.volumes import node_from_volume

    image, result = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    transform = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    node.SetAndObserveTransformNodeID(transform.GetID())
    segmentation_node = segmentation_from_result(context.scene, context.segmentations_logic, result, node)
    points = markups_from_discs(context.scene, DiscsResult([DiscRecord(21, (0.0, 0.0, 0.0), 0.9)]), node)
    assert segmentation_node.GetTransformNodeID() == transform.GetID()
    assert points.GetTransformNodeID() == transform.GetID()


# --- markups ---------------------------------------------------------------------------------


def disc_result() -> DiscsResult:
    return DiscsResult(
        [
            DiscRecord(20, (1.25, -30.5, 120.125), 0.97),
            DiscRecord(21, (1.5, -28.0, 95.75), 0.88),
            DiscRecord(25, (2.0, -20.25, 10.5), 0.42),
        ]
    )


def test_disc_points_equal_core_ras_millimetres(context):
    from slicer.util import arrayFromMarkupsControlPoints
    from SpineSegLib.markups import discs_from_markups, markups_from_discs

    result = disc_result()
    points = markups_from_discs(context.scene, result, name="Discs")
    assert points.IsA("vtkMRMLMarkupsFiducialNode")
    assert [points.GetNthControlPointLabel(i) for i in range(3)] == ["T12/L1", "L1/L2", "L5/S1"]
    np.testing.assert_allclose(arrayFromMarkupsControlPoints(points), [d.position_ras for d in result.discs], atol=1e-9)
    assert points.GetLocked()
    back = discs_from_markups(points)
    assert [d.number for d in back] == [20, 21, 25]
    np.testing.assert_allclose([d.confidence for d in back], [0.97, 0.88, 0.42], atol=1e-3)


def test_markups_confidence_filter_and_chosen_output(context):
    from SpineSegLib.markups import markups_from_discs

    chosen = context.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "mine")
    chosen.AddControlPoint([0.0, 0.0, 0.0], "old")
    untouched = context.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "other")
    untouched.AddControlPoint([0.0, 0.0, 0.0], "keep")
    out = markups_from_discs(context.scene, disc_result(), markups_node=chosen, minimum_confidence=0.5, locked=False)
    assert out is chosen
    assert [chosen.GetNthControlPointLabel(i) for i in range(chosen.GetNumberOfControlPoints())] == ["T12/L1", "L1/L2"]
    assert not chosen.GetLocked()
    assert untouched.GetNumberOfControlPoints() == 1
    with pytest.raises(ValueError, match="minimum_confidence"):
        markups_from_discs(context.scene, disc_result(), minimum_confidence=1.5)


# --- subject hierarchy -----------------------------------------------------------------------


def test_results_are_placed_in_the_inputs_study(context):
    import slicer
    from SpineSegLib.markups import markups_from_discs
    from SpineSegLib.scene import place_in_study
    from SpineSegLib.volumes import node_from_volume

    image, _ = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    points = markups_from_discs(context.scene, disc_result(), node)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(context.scene)
    assert not place_in_study(context.scene, node, [points])  # input not in a study: nothing to do
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
    study = hierarchy.CreateStudyItem(patient, "Study")
    hierarchy.CreateItem(study, node)
    assert place_in_study(context.scene, node, [points])
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(points)) == study


# --- the core's files, read by MRML's own storage nodes ---------------------------------------


def test_input_handed_to_the_background_process_is_uncompressed_and_keeps_geometry(context, tmp_path):
    from SpineSegLib import storage
    from SpineSegLib.volumes import node_from_volume
    from spineseg.io import read_volume

    image, _ = spine_result(oblique_affine())
    node = node_from_volume(context.scene, image, "CT")
    path = storage.write_input_volume(node, tmp_path / "input.nrrd")
    header = path.read_bytes().split(b"\n\n", 1)[0].decode()
    assert "encoding: raw" in header
    assert path.stat().st_size >= image.array.nbytes
    back = read_volume(path)
    assert np.array_equal(back.array, image.array)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)
    with pytest.raises(ValueError, match=".nrrd"):
        storage.write_input_volume(node, tmp_path / "input.nii.gz")


def test_core_seg_nrrd_and_mrk_json_load_in_mrml(context, tmp_path):
    """What the one .seg.nrrd writer and the one .mrk.json writer produce, Slicer reads back exactly."""
    import slicerio
    from SpineSegLib.segmentations import label_map_from_segmentation
    from SpineSegLib.volumes import node_from_volume
    from spineseg.writers import write_markups, write_segmentation_nrrd

    image, labels_only = spine_result(oblique_affine())
    levels = [int(v) for v in np.unique(labels_only.label_map.array) if v]
    records = [VertebraRecord(level, int((labels_only.label_map.array == level).sum()), 1.0, 0.9, (0.0, 0.0, 0.0))
               for level in levels]
    result = VertebraeResult(labels_only.label_map, records)
    node = node_from_volume(context.scene, image, "CT")
    path = tmp_path / "v.seg.nrrd"
    write_segmentation_nrrd(result, path)
    loaded = context.segmentations_logic.LoadSegmentationFromFile(str(path), False, "loaded")
    assert loaded is not None
    segmentation = loaded.GetSegmentation()
    names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
    assert names == [vertebra_segment_name(record.level) for record in result.vertebrae]
    assert np.array_equal(
        label_map_from_segmentation(context.scene, context.segmentations_logic, loaded, node).array,
        result.label_map.array,
    )
    assert_slicerio_matches(slicerio.read_segmentation(str(path)), result.label_map)

    write_markups(disc_result(), tmp_path / "d.mrk.json")
    assert_mrk_json_matches(tmp_path / "d.mrk.json", disc_result())
    loaded_points = context.scene.GetNodeByID(context.markups_logic.LoadMarkups(str(tmp_path / "d.mrk.json"), "x"))
    assert loaded_points.GetNthControlPointLabel(2) == "L5/S1"
    ras = [0.0, 0.0, 0.0]
    loaded_points.GetNthControlPointPosition(2, ras)
    np.testing.assert_allclose(ras, disc_result().discs[2].position_ras, atol=1e-3)


def assert_slicerio_matches(segmentation: dict, label_map: Volume) -> None:
    """A slicerio reading (LPS, [i, j, k], maybe cropped) holds exactly the label map's voxels."""
    levels = sorted(int(v) for v in np.unique(label_map.array) if v)
    by_name = {segment["name"]: segment for segment in segmentation["segments"]}
    assert sorted(by_name) == sorted(vertebra_segment_name(level) for level in levels)
    voxels = np.asarray(segmentation["voxels"])
    ijk_to_lps = np.asarray(segmentation["ijkToLPS"], dtype=float)
    ours_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ label_map.affine
    shift = np.linalg.inv(ours_lps) @ ijk_to_lps  # file grid -> our grid: a pure integer offset
    np.testing.assert_allclose(shift[:3, :3], np.eye(3), atol=1e-6)
    offset = np.round(shift[:3, 3]).astype(int)
    np.testing.assert_allclose(shift[:3, 3], offset, atol=1e-4)
    embedded = np.zeros(label_map.shape, np.int64)
    region = tuple(slice(o, o + n) for o, n in zip(offset, voxels.shape[:3]))
    for level in levels:
        segment = by_name[vertebra_segment_name(level)]
        assert segment["labelValue"] == level
        code = vertebra_terminology(level)
        assert segment["terminology"]["type"] == [code.scheme, code.value, code.meaning]
        assert segment["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
        assert not segment["colorAutoGenerated"] and not segment["nameAutoGenerated"]
        np.testing.assert_allclose(segment["color"], vertebra_colour(level), atol=1e-5)
        layer = voxels if voxels.ndim == 3 else voxels[..., segment.get("layer", 0)]
        embedded[region][layer == segment["labelValue"]] = level
    assert np.array_equal(embedded, label_map.array)


def assert_mrk_json_matches(path: Path, result: DiscsResult) -> None:
    data = json.loads(Path(path).read_text())
    markup = data["markups"][0]
    flip = np.array([-1.0, -1.0, 1.0]) if markup.get("coordinateSystem", "LPS") == "LPS" else np.ones(3)
    labels = [point["label"] for point in markup["controlPoints"]]
    positions = np.array([point["position"] for point in markup["controlPoints"]]) * flip
    assert labels == [disc.name for disc in result.discs]
    np.testing.assert_allclose(positions, [disc.position_ras for disc in result.discs], atol=1e-6)


# --- background process ------------------------------------------------------------------------

CHILD_OK = """
import json, sys, time
print(json.dumps({"progress": 0.25, "message": "reading"}), flush=True)
print("plain log line", flush=True)
print(json.dumps({"progress": 0.75, "message": "segmenting"}), flush=True)
print(json.dumps({"done": True, "outputs": {"labels": "out/vertebrae.nii.gz"}}), flush=True)
"""

CHILD_FAIL = """
import sys
print('{"progress": 0.1, "message": "reading"}', flush=True)
print("spineseg: error: input not found: x.nii.gz", file=sys.stderr, flush=True)
sys.exit(2)
"""

CHILD_HANG = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print('{"progress": 0.5, "message": "pid %d"}' % grandchild.pid, flush=True)
time.sleep(60)
"""


def test_process_reports_progress_and_outputs():
    runner = process.BackgroundProcess([sys.executable, "-c", CHILD_OK])
    runner.start()
    assert runner.wait(timeout=30) is process.ProcessState.SUCCEEDED
    assert runner.outputs == {"labels": "out/vertebrae.nii.gz"}
    assert runner.fraction == 1.0 and runner.status_message == "segmenting"
    assert runner.error_message == ""


def test_process_events_in_order():
    runner = process.BackgroundProcess([sys.executable, "-c", CHILD_OK])
    runner.start()
    events = []
    deadline = time.monotonic() + 30
    while not runner.finished and time.monotonic() < deadline:
        events += runner.poll()
        time.sleep(0.02)
    kinds = [event.kind for event in events]
    assert kinds == [
        process.EventKind.PROGRESS,
        process.EventKind.LOG,
        process.EventKind.PROGRESS,
        process.EventKind.DONE,
        process.EventKind.FINISHED,
    ]
    assert [e.fraction for e in events if e.kind is process.EventKind.PROGRESS] == [0.25, 0.75]


def test_process_failure_carries_the_stderr_line():
    runner = process.BackgroundProcess([sys.executable, "-c", CHILD_FAIL])
    runner.start()
    assert runner.wait(timeout=30) is process.ProcessState.FAILED
    assert runner.returncode == 2
    assert runner.error_message == "spineseg: error: input not found: x.nii.gz"


def test_process_success_without_done_message_is_a_failure():
    runner = process.BackgroundProcess([sys.executable, "-c", "print('hello')"])
    runner.start()
    assert runner.wait(timeout=30) is process.ProcessState.FAILED
    assert "without reporting" in runner.error_message


@pytest.mark.skipif(os.name == "nt", reason="process groups are POSIX")
def test_cancel_kills_the_whole_process_tree():
    runner = process.BackgroundProcess([sys.executable, "-c", CHILD_HANG])
    runner.start()
    deadline = time.monotonic() + 30
    while not runner.status_message and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    grandchild = int(runner.status_message.split()[1])
    runner.cancel()
    assert runner.wait(timeout=10) is process.ProcessState.CANCELLED
    assert runner.error_message == "cancelled by the user"
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """True while a process runs (a zombie awaiting its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_process_rejects_bad_use():
    with pytest.raises(ValueError, match="command"):
        process.BackgroundProcess([])
    runner = process.BackgroundProcess([sys.executable, "-c", "pass"])
    runner.start()
    with pytest.raises(RuntimeError, match="already started"):
        runner.start()
    runner.wait(timeout=30)


def test_parse_stdout_line():
    assert process.parse_stdout_line('{"progress": 1.5, "message": "x"}').fraction == 1.0
    assert process.parse_stdout_line("{not json").kind is process.EventKind.LOG
    assert process.parse_stdout_line('{"done": true}').outputs == {}


def test_cli_command_and_environment(tmp_path):
    command = process.cli_command("/opt/PythonSlicer", "discs", tmp_path / "in.nrrd", tmp_path / "out", "cpu", "demo",
                                  input_name="/data/mri.nii.gz")
    assert command[0] == "/opt/PythonSlicer" and command[1] == "-c"
    assert command[3:] == [
        "discs", str(tmp_path / "in.nrrd"), "-o", str(tmp_path / "out"),
        "--device", "cpu", "--progress-format", "json", "--no-picture", "--model", "demo",
        "--input-name", "/data/mri.nii.gz",
    ]  # fmt: skip
    assert "--model" not in process.cli_command("py", "vertebrae", "a", "b")
    with pytest.raises(ValueError, match="task"):
        process.cli_command("py", "ribs", "a", "b")
    with pytest.raises(ValueError, match="device"):
        process.cli_command("py", "discs", "a", "b", device="tpu")
    env = process.child_environment("/modules", "cpu", base={"PYTHONPATH": "/other"})
    assert env["PYTHONPATH"] == os.pathsep.join(["/modules", "/other"])
    assert env["CUDA_VISIBLE_DEVICES"] == "-1"
    assert "CUDA_VISIBLE_DEVICES" not in process.child_environment("/modules", "auto", base={})


# --- dependencies ------------------------------------------------------------------------------


def test_missing_requirements_skip_what_slicer_ships():
    installed = {"torch"}
    missing = dependencies.missing_requirements(
        ["torch>=2.0", "numpy>=1.26", "SimpleITK>=2.3", "scipy", "safetensors>=0.4", "tqdm"],
        is_installed=lambda name: name in installed,
    )
    assert missing == ["safetensors>=0.4", "tqdm"]
    assert dependencies.requirement_name("SimpleITK>=2.3") == "simpleitk"
    assert dependencies.requirement_name("slicer_core==5") == "slicer-core"
    with pytest.raises(ValueError):
        dependencies.requirement_name(">=1")


def test_disc_naming_read_back_for_the_status_line(context, tmp_path):
    from SpineSegLib import storage
    from spineseg.results import DiscNaming
    from spineseg.writers import result_table, write_json

    write_json(result_table(DiscsResult([DiscRecord(21, (0.0, 0.0, 0.0), 0.9)], naming=DiscNaming("C2")), "x", {}),
               tmp_path / "discs.json")
    assert storage.load_discs_outputs(tmp_path).naming.summary == "names counted from C2, confidence 0.90"
    (tmp_path / "discs.json").write_text(json.dumps({"discs": []}))  # written before naming existed
    assert not storage.read_disc_naming(tmp_path).anchored
