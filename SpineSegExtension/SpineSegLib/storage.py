"""Files between the scene and a SpineSeg job: the input handed over, the results read back.

The records (names, completeness, centroids, confidences) come from the JSON the
core wrote, never recomputed here, so Slicer shows what the files say.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from spineseg.io import read_volume
from spineseg.labels import disc_number
from spineseg.publish import atomic_path
from spineseg.results import DiscNaming, DiscRecord, DiscsResult, NamingRecord, VertebraeResult, VertebraRecord
from spineseg.volume import VolumeKind

__all__ = ["write_input_volume", "load_vertebrae_outputs", "load_discs_outputs", "read_warnings", "read_naming",
           "read_disc_naming"]


def write_input_volume(volume_node: Any, path: str | os.PathLike) -> Path:
    """Write the volume handed to the background process as an uncompressed ``.nrrd``.

    The file is read once and deleted, and it is written on the GUI thread:
    compression would only make Slicer wait (about 5x longer on a large CT).
    """
    if not str(path).endswith(".nrrd"):
        raise ValueError(f"input volume path must end with .nrrd, got {path}")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetUseCompression(False)
    with atomic_path(path) as temporary:
        storage.SetFileName(str(temporary))
        if not storage.WriteData(volume_node):
            raise OSError(f"Slicer could not write {volume_node.GetName()!r} to {path}")
    return Path(path)




def _record_list(data: Any, key: str) -> list[dict]:
    """The list of records in a result JSON file: either the list itself or under ``key``."""
    if isinstance(data, dict):
        data = data.get(key, [])
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def read_warnings(folder: str | os.PathLike, task: str) -> list[str]:
    """The warnings about the input that a job wrote into ``TASK.json`` (none in files of older versions)."""
    data = json.loads((Path(folder) / f"{task}.json").read_text())
    warnings = data.get("warnings", []) if isinstance(data, dict) else []
    return [str(item) for item in warnings] if isinstance(warnings, list) else []


def read_disc_naming(folder: str | os.PathLike) -> DiscNaming:
    """How a disc job named the levels (``naming`` of ``discs.json``; files without it read as unanchored)."""
    data = json.loads((Path(folder) / "discs.json").read_text())
    naming = data.get("naming") if isinstance(data, dict) else None
    anchor = naming.get("anchor") if isinstance(naming, dict) and naming.get("anchored") else None
    confidences = [float(item["confidence"]) for item in _record_list(data, "discs")
                   if isinstance(item.get("confidence"), (int, float))]
    return DiscNaming(str(anchor) if anchor else None, float(np.mean(confidences)) if confidences else None)


def load_vertebrae_outputs(folder: str | os.PathLike) -> VertebraeResult:
    """Read ``vertebrae.nii.gz`` and the records of ``vertebrae.json`` written by a vertebra job."""
    folder = Path(folder)
    label_map = read_volume(folder / "vertebrae.nii.gz", VolumeKind.LABEL)
    label_map = label_map.with_array(label_map.array.astype(np.uint8), VolumeKind.LABEL)
    records = [  # older files say "level" and "centroid_ras" (docs/output-files.md)
        VertebraRecord(int(item["number"] if "number" in item else item["level"]), int(item["voxel_count"]),
                       float(item["volume_ml"]), float(item["completeness"]),
                       tuple(float(x) for x in item["position_ras" if "position_ras" in item else "centroid_ras"]))
        for item in _record_list(json.loads((folder / "vertebrae.json").read_text()), "vertebrae")
    ]
    return VertebraeResult(label_map, records, read_warnings(folder, "vertebrae"), read_naming(folder))


def read_naming(folder: str | os.PathLike) -> NamingRecord | None:
    """How a vertebra job's names were fixed (the anchor, or unanchored), from ``vertebrae.json``; None in files
    of older versions."""
    data = json.loads((Path(folder) / "vertebrae.json").read_text())
    naming = data.get("naming") if isinstance(data, dict) else None
    return NamingRecord.from_dict(naming) if isinstance(naming, dict) else None


def load_discs_outputs(folder: str | os.PathLike) -> DiscsResult:
    """Read ``discs.json`` written by ``spineseg discs`` (positions in RAS mm; files without ``naming`` read as
    unanchored)."""
    data = json.loads((Path(folder) / "discs.json").read_text())
    discs = []
    for item in _record_list(data, "discs"):
        number = int(item["number"]) if "number" in item else disc_number(str(item.get("name", item.get("label"))))
        position = tuple(float(x) for x in item["position_ras"])
        discs.append(DiscRecord(number, position, float(item.get("confidence", 1.0))))
    return DiscsResult(discs, warnings=read_warnings(folder, "discs"), naming=read_disc_naming(folder))
