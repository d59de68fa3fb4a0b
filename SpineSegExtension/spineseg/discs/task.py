"""The disc task as the front ends see it: its :class:`~spineseg.tasks.TaskSpec` and its writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tasks import InputProfile, PanelOptions, TaskSpec

__all__ = ["SPEC", "write_outputs", "current_layout"]


def write_outputs(image: Any, result: Any, folder: Path, names: list[str], source: str,
                  model: dict[str, Any]) -> None:
    """Write the Slicer markups, the picture (when in ``names``) and ``discs.json``."""
    from .. import pictures, writers

    writers.write_json(writers.result_table(result, source, model), folder / "discs.json")
    writers.write_markups(result, folder / "discs.mrk.json")
    if "discs.png" in names:
        title = f"{Path(source).name}: {len(result.discs)} discs"
        pictures.write_discs_picture(result, folder / "discs.png", title=title)


def current_layout(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest of the former layout in today's: the input geometry sat at the top level (models trained
    before the task registry)."""
    if "input" not in manifest and "input_size" in manifest:
        manifest["input"] = {key: manifest.pop(key) for key in ("input_size", "output_stride", "slab_thickness_mm")
                             if key in manifest}
    return manifest


SPEC = TaskSpec(
    name="discs",
    label="Label discs (MRI)",
    help="find and name every intervertebral disc in an MRI",
    image="an MRI",
    items=("disc", "discs"),
    dicom_modality="MR",
    output_names=("discs.mrk.json", "discs.png", "discs.json"),
    picture_name="discs.png",
    default_model="discs-mri-synth-v3",
    # Two discs are at least ~15 mm apart; an image shorter than 30 mm across two axes cannot show a labelled
    # spine.
    input_checks=InputProfile(
        modality="MR",
        min_cross_section_mm=30.0,
        cross_section_refusal="the image is too small to hold a spine: {extent} mm; it must span at least "
                              "{minimum:.0f} mm along two axes",
    ),
    predictor="spineseg.discs.pipeline:label_discs",
    result_type="spineseg.results:DiscsResult",
    writer=write_outputs,
    model_class="spineseg.networks.disc_model:DiscModel",
    settings_class="spineseg.networks.disc_model:DiscModelSettings",
    network_class="spineseg.networks.hourglass:AttentionHourglassNet",
    panel=PanelOptions(apply_text="Label discs", output="markups"),
    current_layout=current_layout,
)
