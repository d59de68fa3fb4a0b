"""The vertebra task as the front ends see it: its :class:`~spineseg.tasks.TaskSpec` and its writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..labels import vertebra_name
from ..tasks import InputProfile, PanelOptions, TaskSpec

__all__ = ["SPEC", "write_outputs", "print_reference_scores", "current_layout"]


def write_outputs(image: Any, result: Any, folder: Path, names: list[str], source: str,
                  model: dict[str, Any]) -> None:
    """Write the label map, the Slicer segmentation, the picture (when in ``names``) and ``vertebrae.json``."""
    from .. import pictures, writers
    from ..io import write_volume

    writers.write_json(writers.result_table(result, source, model), folder / "vertebrae.json")
    write_volume(result.label_map, folder / "vertebrae.nii.gz")
    writers.write_segmentation_nrrd(result, folder / "vertebrae.seg.nrrd")
    if "vertebrae.png" in names:
        found = ", ".join(vertebra_name(level) for level in result.levels) or "no vertebra found"
        pictures.write_vertebrae_picture(image, result, folder / "vertebrae.png", title=found)


def print_reference_scores(image: Any, result: Any, reference: Any) -> None:
    """Print the Dice and naming scores of the label map against a reference label map (VerSe numbers)."""
    from ..demo import print_vertebra_scores
    from ..metrics import score_vertebrae

    print_vertebra_scores(score_vertebrae(result.label_map.array, reference.array, image.spacing))


def current_layout(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest of the former layout in today's: the network's settings sat in ``input.network`` beside a
    descriptive ``architecture`` string (models trained before the task registry)."""
    if isinstance(manifest.get("architecture"), str):
        geometry = dict(manifest.get("input") or {})
        manifest["architecture"] = {"type": "IterativeFCN", **geometry.pop("network", {})}
        manifest["input"] = geometry
    return manifest


SPEC = TaskSpec(
    name="vertebrae",
    label="Segment vertebrae (CT)",
    help="segment and name every vertebra in a CT",
    image="a CT",
    items=("vertebra", "vertebrae"),
    dicom_modality="CT",
    output_names=("vertebrae.nii.gz", "vertebrae.seg.nrrd", "vertebrae.png", "vertebrae.json"),
    picture_name="vertebrae.png",
    default_model="vertebrae-ct-synth-v7",
    # The smallest vertebra (C3: body about 15 mm wide and deep, 12 mm tall) with a little tissue around it
    # needs 20 mm along every axis; a thinner image shows at most a slice through one, which the network would
    # still name. A CT of the spine spans at least 40 mm across two axes (C3 with its processes is about 45 mm
    # wide, lumbar vertebrae 70-80 mm): a narrower image has a wrong voxel size, on which the walk finds nothing.
    # Voxels more than 3 times longer than wide blur end plates: vertebrae merge or split and names shift.
    input_checks=InputProfile(
        modality="CT",
        min_extent_mm=20.0,
        extent_refusal="the image is too small to hold a vertebra: {extent} mm; it must span at least {minimum:.0f} "
                       "mm along every axis",
        min_cross_section_mm=40.0,
        cross_section_refusal="the image is too narrow to hold a vertebra: {extent} mm; a CT of the spine spans at "
                              "least {minimum:.0f} mm across two axes (the smallest vertebra is about 45 mm wide): "
                              "check its voxel size (PixelSpacing, pixdim)",
        max_anisotropy=3.0,
    ),
    predictor="spineseg.vertebrae.pipeline:segment_vertebrae",
    result_type="spineseg.results:VertebraeResult",
    writer=write_outputs,
    model_class="spineseg.networks.vertebra_model:VertebraModel",
    settings_class="spineseg.networks.vertebra_model:VertebraModelSettings",
    network_class="spineseg.networks.unet3d:IterativeFCN",
    panel=PanelOptions(apply_text="Segment vertebrae", output="segmentation"),
    reference_scorer=print_reference_scores,
    current_layout=current_layout,
)
