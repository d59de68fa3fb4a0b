"""Files written by the disc task: Slicer markups, a JSON table and a picture.

* ``discs.mrk.json``: Slicer markups point list (schema v1.0.3), positions in
  LPS as Slicer writes them, one control point per disc named "C2/C3" etc.;
* ``discs.json``: the records (``DiscRecord.to_dict``, RAS mm), input file, model;
* ``discs.png``: the mid-sagittal slab with the labelled points.

:func:`run_discs` is the whole job behind ``spineseg discs INPUT -o OUTDIR``:
read, check, label, write. All three files appear together or not at all.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io import output_directory, read_volume
from ..progress import ProgressCallback, no_progress, scaled
from ..results import DiscsResult
from .pipeline import DiscModel, check_volume, label_discs

__all__ = ["OUTPUT_NAMES", "MARKUPS_SCHEMA", "markups_json", "write_markups", "write_table", "write_picture", "run_discs"]

log = logging.getLogger(__name__)

OUTPUT_NAMES = ["discs.mrk.json", "discs.json", "discs.png"]
MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def markups_json(result: DiscsResult, name: str = "Discs") -> dict:
    """Slicer markups point-list document for the discs (LPS coordinates)."""
    points = []
    for index, disc in enumerate(result.discs, start=1):
        lps = np.asarray(disc.position_ras, dtype=float) * _RAS_TO_LPS
        points.append({
            "id": str(index),
            "label": disc.name,
            "description": f"intervertebral disc {disc.number} (Spinal Cord Toolbox numbering), "
                           f"confidence {disc.confidence:.2f}",
            "associatedNodeID": "",
            "position": [round(float(x), 4) for x in lps],
            "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
            "selected": True,
            "locked": True,
            "visibility": True,
            "positionStatus": "defined",
        })
    return {
        "@schema": MARKUPS_SCHEMA,
        "markups": [{
            "type": "Fiducial",
            "coordinateSystem": "LPS",
            "coordinateUnits": "mm",
            "locked": True,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": len(points),
            "controlPoints": points,
            "measurements": [],
            "display": {"visibility": True, "opacity": 1.0, "color": [0.4, 1.0, 1.0],
                        "selectedColor": [1.0, 0.5, 0.5], "propertiesLabelVisibility": True,
                        "pointLabelsVisibility": True, "textScale": 3.0, "glyphType": "Sphere3D",
                        "glyphScale": 3.0, "glyphSize": 5.0, "useGlyphScale": True},
        }],
    }


def write_markups(result: DiscsResult, path: str | os.PathLike) -> None:
    """Write ``discs.mrk.json``."""
    Path(path).write_text(json.dumps(markups_json(result), indent=2) + "\n")


def write_table(result: DiscsResult, path: str | os.PathLike, input_path: str | os.PathLike | None = None,
                model: DiscModel | None = None) -> None:
    """Write ``discs.json``: one record per disc plus where it came from."""
    document = {
        "input": None if input_path is None else str(input_path),
        "model": None if model is None else {"name": model.name, "version": model.manifest.get("version"),
                                             "sha256": model.manifest.get("sha256")},
        "spineseg_version": __version__,
        "coordinate_system": "RAS",
        "units": "mm",
        "discs": [disc.to_dict() for disc in result.discs],
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def write_picture(result: DiscsResult, path: str | os.PathLike, title: str = "") -> None:
    """Write ``discs.png``: the slab (head up, front left) with one labelled dot per disc."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 6.4), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    slab = np.zeros((8, 8)) if result.slab is None else result.slab
    axes.imshow(slab, cmap="gray", vmin=float(np.percentile(slab, 1)), vmax=float(np.percentile(slab, 99.5)))
    if result.slab_to_ras is not None and result.discs:
        matrix = np.asarray(result.slab_to_ras)
        for disc in result.discs:
            ras = np.asarray(disc.position_ras)
            row = (ras[2] - matrix[2, 2]) / matrix[2, 0]
            col = (ras[1] - matrix[1, 2]) / matrix[1, 1]
            axes.plot(col, row, "o", color="#ff4040", markersize=4)
            axes.annotate(f"{disc.name} ({disc.confidence:.2f})", (col, row), xytext=(8, 0),
                          textcoords="offset points", color="#ffff60", fontsize=7, va="center")
    axes.set_title(title or f"{len(result.discs)} discs (mid-sagittal slab)", fontsize=9)
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(str(path))


def run_discs(input_path: str | os.PathLike, output_dir: str | os.PathLike, *, model: DiscModel | str | None = None,
              device: str = "auto", overwrite: bool = False, progress: ProgressCallback = no_progress) -> DiscsResult:
    """Label the discs of one MRI file and write discs.mrk.json, discs.json and discs.png.

    Args:
        input_path: anything :func:`spineseg.io.read_volume` reads.
        output_dir: output folder (created); existing outputs need ``overwrite``.
        model: a DiscModel, a path to a .safetensors file, or None (bundled model).
        device: "auto", "cpu" or "cuda".
        overwrite: replace existing output files.
        progress: callback (fraction, message).

    Raises:
        InputError: unreadable, 2D or too small input, or outputs already there.
        ModelError: the model cannot be loaded.
    """
    progress(0.0, f"reading {input_path}")
    volume = read_volume(input_path)
    check_volume(volume)
    if not isinstance(model, DiscModel):
        model = DiscModel.from_file(model)
    with output_directory(output_dir, OUTPUT_NAMES, overwrite=overwrite) as staging:
        result = label_discs(volume, model, device=device, progress=scaled(progress, 0.05, 0.9))
        progress(0.9, "writing discs.mrk.json, discs.json, discs.png")
        write_markups(result, staging / "discs.mrk.json")
        write_table(result, staging / "discs.json", input_path, model)
        write_picture(result, staging / "discs.png", title=f"{Path(input_path).name}: {len(result.discs)} discs")
    progress(1.0, f"wrote {len(result.discs)} discs to {output_dir}")
    return result
