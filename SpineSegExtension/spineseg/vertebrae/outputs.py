"""The four files of a vertebra run: label map, Slicer segmentation, JSON table, picture."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import slicerio  # noqa: E402

from ..geometry import resample_to, working_grid  # noqa: E402
from ..io import write_volume  # noqa: E402
from ..labels import slicer_terminology_entry, vertebra_colour, vertebra_name, vertebra_segment_name, vertebra_terminology  # noqa: E402
from ..results import VertebraeResult  # noqa: E402
from ..volume import Volume  # noqa: E402

__all__ = ["OUTPUT_NAMES", "write_segmentation_nrrd", "write_vertebrae_picture", "write_vertebrae_outputs"]

OUTPUT_NAMES = ["vertebrae.nii.gz", "vertebrae.seg.nrrd", "vertebrae.json", "vertebrae.png"]
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_segmentation_nrrd(result: VertebraeResult, path: Path) -> None:
    """A Slicer ``.seg.nrrd``: one named, coloured segment with SNOMED terminology per vertebra."""
    labels = result.label_map
    segments = []
    for record in result.vertebrae:
        terminology = slicerio.segmentation.terminology_entry_from_string(
            slicer_terminology_entry(vertebra_terminology(record.level))
        )
        segments.append(
            {
                "id": f"vertebra_{record.level}",
                "name": vertebra_segment_name(record.level),
                "labelValue": record.level,
                "layer": 0,
                "color": [round(c, 6) for c in vertebra_colour(record.level)],
                "terminology": terminology,
                "status": "completed",
            }
        )
    segmentation = {
        "voxels": labels.array,
        "ijkToLPS": _RAS_TO_LPS @ labels.affine,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "segments": segments,
    }
    slicerio.write_segmentation(str(path), segmentation)


def _anatomical_views(image: Volume, labels: Volume) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Mid-sagittal and coronal slices (head up) of image and labels, through the spine."""
    grid = working_grid(image, max(1.0, float(image.spacing.min())))
    shown = resample_to(image, grid, fill_value=-1000.0).array
    shown_labels = resample_to(labels, grid).array
    bone = np.argwhere(shown_labels > 0)
    centre = bone.mean(axis=0).round().astype(int) if len(bone) else (np.array(grid.shape) // 2)
    sagittal = (shown[centre[0], :, :].T[::-1], shown_labels[centre[0], :, :].T[::-1])
    coronal = (shown[:, centre[1], :].T[::-1], shown_labels[:, centre[1], :].T[::-1])
    return [sagittal[0], coronal[0]], [sagittal[1], coronal[1]], grid.spacing


def write_vertebrae_picture(image: Volume, result: VertebraeResult, path: Path, title: str = "") -> None:
    """Sagittal and coronal views (CT window -250..1250 HU) with coloured, named vertebrae."""
    images, label_slices, spacing = _anatomical_views(image, result.label_map)
    figure, axes = plt.subplots(1, 2, figsize=(10, 7), facecolor="black")
    for axis, view, labels, name in zip(axes, images, label_slices, ["sagittal", "coronal"]):
        axis.imshow(view, cmap="gray", vmin=-250, vmax=1250, aspect=spacing[2] / spacing[1])
        overlay = np.zeros(labels.shape + (4,))
        for record in result.vertebrae:
            where = labels == record.level
            if not where.any():
                continue
            overlay[where] = (*vertebra_colour(record.level), 0.45)
            row, column = np.argwhere(where).mean(axis=0)
            axis.text(column, row, vertebra_name(record.level), color="white", fontsize=8,
                      ha="center", va="center", fontweight="bold")
        axis.imshow(overlay, aspect=spacing[2] / spacing[1])
        axis.set_title(name, color="white")
        axis.axis("off")
    if title:
        figure.suptitle(title, color="white")
    figure.tight_layout()
    figure.savefig(path, dpi=100, facecolor="black")
    plt.close(figure)


def write_vertebrae_outputs(
    image: Volume, result: VertebraeResult, folder: Path, source: str = "", model: str = ""
) -> dict[str, Path]:
    """Write the four outputs into ``folder`` and return their paths by kind."""
    folder = Path(folder)
    paths = {name: folder / name for name in OUTPUT_NAMES}
    write_volume(result.label_map, paths["vertebrae.nii.gz"])
    write_segmentation_nrrd(result, paths["vertebrae.seg.nrrd"])
    table = {
        "input": source,
        "model": model,
        "vertebrae": [record.to_dict() for record in result.vertebrae],
    }
    paths["vertebrae.json"].write_text(json.dumps(table, indent=2) + "\n")
    names = ", ".join(vertebra_name(r.level) for r in result.vertebrae) or "no vertebra found"
    write_vertebrae_picture(image, result, paths["vertebrae.png"], title=names)
    return paths
