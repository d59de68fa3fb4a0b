"""Write output nodes through MRML's own storage nodes, and read the CLI's result files back.

Files are written atomically: to a temporary name in the same folder (keeping
the ``.seg.nrrd`` / ``.mrk.json`` suffix the storage node chooses its format
by), then moved into place with ``os.replace``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from spineseg.io import atomic_path, read_volume
from spineseg.labels import disc_number
from spineseg.results import DiscRecord, DiscsResult, VertebraeResult, VertebraRecord
from spineseg.volume import VolumeKind

__all__ = [
    "write_input_volume",
    "write_segmentation",
    "write_markups",
    "load_vertebrae_outputs",
    "load_discs_outputs",
    "records_from_label_map",
]


def _write(node: Any, storage: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as temporary:
        storage.SetFileName(str(temporary))
        if not storage.WriteData(node):
            raise OSError(f"Slicer could not write {node.GetName()!r} to {path}")
    return Path(path)


def write_input_volume(volume_node: Any, path: str | os.PathLike) -> Path:
    """Write the volume handed to the background process as an uncompressed ``.nrrd``.

    The file is read once and deleted, and it is written on the GUI thread:
    compression would only make Slicer wait (about 5x longer on a large CT).
    """
    if not str(path).endswith(".nrrd"):
        raise ValueError(f"input volume path must end with .nrrd, got {path}")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetUseCompression(False)
    return _write(volume_node, storage, path)


def write_segmentation(segmentation_node: Any, path: str | os.PathLike) -> Path:
    """Write a segmentation node as ``.seg.nrrd`` (compressed) through vtkMRMLSegmentationStorageNode."""
    if not str(path).endswith(".seg.nrrd"):
        raise ValueError(f"segmentation path must end with .seg.nrrd, got {path}")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetUseCompression(True)
    return _write(segmentation_node, storage, path)


def write_markups(markups_node: Any, path: str | os.PathLike) -> Path:
    """Write a markups node as ``.mrk.json`` through vtkMRMLMarkupsJsonStorageNode."""
    if not str(path).endswith(".mrk.json"):
        raise ValueError(f"markups path must end with .mrk.json, got {path}")
    return _write(markups_node, slicer.vtkMRMLMarkupsJsonStorageNode(), path)


def records_from_label_map(label_map: Any) -> list[VertebraRecord]:
    """Minimal records (level, voxels, volume, centroid) computed from a label map alone."""
    voxel_ml = float(np.prod(label_map.spacing)) / 1000.0
    records = []
    for level in sorted(int(v) for v in np.unique(label_map.array) if v != 0):
        ijk = np.argwhere(label_map.array == level)
        centroid = label_map.ijk_to_ras(ijk.mean(axis=0))[0]
        records.append(
            VertebraRecord(level, len(ijk), len(ijk) * voxel_ml, float("nan"), tuple(float(x) for x in centroid))
        )
    return records


def _record_list(data: Any, key: str) -> list[dict]:
    """The list of records in a result JSON file: either the list itself or under ``key``."""
    if isinstance(data, dict):
        data = data.get(key, [])
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def load_vertebrae_outputs(folder: str | os.PathLike) -> VertebraeResult:
    """Read ``vertebrae.nii.gz`` (and ``vertebrae.json`` if present) written by ``spineseg vertebrae``."""
    folder = Path(folder)
    label_map = read_volume(folder / "vertebrae.nii.gz", VolumeKind.LABEL)
    label_map = label_map.with_array(label_map.array.astype(np.uint8), VolumeKind.LABEL)
    records = records_from_label_map(label_map)
    table = folder / "vertebrae.json"
    if table.exists():
        found = {}
        for item in _record_list(json.loads(table.read_text()), "vertebrae"):
            if "level" in item and "completeness" in item:
                found[int(item["level"])] = float(item["completeness"])
        records = [
            VertebraRecord(r.level, r.voxel_count, r.volume_ml, found.get(r.level, r.completeness), r.centroid_ras)
            for r in records
        ]
    return VertebraeResult(label_map, records)


def load_discs_outputs(folder: str | os.PathLike) -> DiscsResult:
    """Read ``discs.json`` written by ``spineseg discs`` (positions in RAS mm)."""
    data = json.loads((Path(folder) / "discs.json").read_text())
    discs = []
    for item in _record_list(data, "discs"):
        number = int(item["number"]) if "number" in item else disc_number(str(item["label"]))
        position = tuple(float(x) for x in item["position_ras"])
        discs.append(DiscRecord(number, position, float(item.get("confidence", 1.0))))
    return DiscsResult(discs)
