"""Volume nodes <-> core :class:`spineseg.volume.Volume` (the axis-order edge).

Slicer's ``arrayFromVolume`` gives ``[k, j, i]`` arrays; the core uses
``[i, j, k]``. Geometry comes from the node's IJK-to-RAS matrix, which
already includes spacing, origin and axis directions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk
from slicer.util import arrayFromVolume, updateVolumeFromArray

from spineseg.volume import Volume, VolumeKind

__all__ = ["ijk_to_ras_of_node", "volume_from_node", "node_from_volume", "set_node_geometry"]


def ijk_to_ras_of_node(volume_node: Any) -> np.ndarray:
    """The node's own 4x4 IJK-to-RAS matrix (parent transforms not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def set_node_geometry(volume_node: Any, affine: np.ndarray) -> None:
    """Set a volume node's IJK-to-RAS matrix from a 4x4 numpy affine."""
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(affine[r, c]))
    volume_node.SetIJKToRASMatrix(matrix)


def volume_from_node(volume_node: Any) -> Volume:
    """Copy a scalar or label map volume node into a core Volume (``[i, j, k]`` array).

    Raises:
        ValueError: the node is not a volume, holds no image or is not 3D scalar.
    """
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        kind = "None" if volume_node is None else volume_node.GetClassName()
        raise ValueError(f"volume_node must be a scalar volume node, got {kind}")
    if volume_node.GetImageData() is None:
        raise ValueError(f"volume node {volume_node.GetName()!r} holds no image data")
    kji = arrayFromVolume(volume_node)
    if kji.ndim != 3:
        raise ValueError(
            f"volume node {volume_node.GetName()!r} must be a 3D single-component image, got shape {kji.shape}"
        )
    kind = VolumeKind.LABEL if volume_node.IsA("vtkMRMLLabelMapVolumeNode") else VolumeKind.INTENSITY
    array = np.ascontiguousarray(kji.transpose(2, 1, 0))  # a copy, detached from the node
    return Volume(array, ijk_to_ras_of_node(volume_node), kind)


def node_from_volume(scene: Any, volume: Volume, name: str, label_map: bool | None = None) -> Any:
    """Add a new volume node holding ``volume`` (a label map node for label volumes)."""
    if label_map is None:
        label_map = volume.kind is VolumeKind.LABEL
    class_name = "vtkMRMLLabelMapVolumeNode" if label_map else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, name)
    set_node_geometry(node, volume.affine)
    updateVolumeFromArray(node, np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    return node


def parent_transform_id(volume_node: Any) -> str | None:
    """ID of the transform the node sits under, so outputs can follow it."""
    transform = volume_node.GetParentTransformNode()
    return transform.GetID() if transform is not None else None


__all__.append("parent_transform_id")
