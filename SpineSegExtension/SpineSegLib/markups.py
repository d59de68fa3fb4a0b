"""Core disc results -> a markups point list with one labelled point per disc."""

from __future__ import annotations

from typing import Any

import numpy as np

from spineseg.labels import DISC_COLOUR, disc_number
from spineseg.results import DiscRecord, DiscsResult

from .terminology import set_disc_terminology

__all__ = ["markups_from_discs", "discs_from_markups"]


def markups_from_discs(
    scene: Any,
    result: DiscsResult,
    reference_volume_node: Any = None,
    markups_node: Any = None,
    name: str | None = None,
    locked: bool = True,
    minimum_confidence: float = 0.0,
) -> Any:
    """Fill a point list with one point per disc, labelled like "C2/C3", at its RAS position.

    Args:
        scene: the MRML scene; the markups logic must be attached to it
            (markups node classes are registered by that logic).
        result: the core result (positions in RAS mm of the input's own space).
        reference_volume_node: the input volume; a new list follows its parent transform.
        markups_node: a point list the user chose as output (its points are
            replaced); None creates a new node.
        name: name of a new node (default: "<input> discs" or "Discs").
        locked: lock the list so a stray click cannot move a point.
        minimum_confidence: leave out discs found with less confidence.

    Each point's description holds the disc's confidence. The list carries the
    intervertebral-disc entry of SpineSeg's terminology and its colour.
    """
    if not 0.0 <= minimum_confidence <= 1.0:
        raise ValueError(f"minimum_confidence must be within 0..1, got {minimum_confidence}")
    if markups_node is None:
        base = name or (f"{reference_volume_node.GetName()} discs" if reference_volume_node else "Discs")
        markups_node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(base))
        if markups_node is None:
            raise RuntimeError("the scene cannot create markups nodes: attach the markups logic to it first")
    else:
        markups_node.RemoveAllControlPoints()
    markups_node.CreateDefaultDisplayNodes()
    markups_node.GetDisplayNode().SetSelectedColor(*DISC_COLOUR)
    set_disc_terminology(markups_node)
    if reference_volume_node is not None:
        transform = reference_volume_node.GetParentTransformNode()
        markups_node.SetAndObserveTransformNodeID(transform.GetID() if transform else None)
    was_modifying = markups_node.StartModify()
    try:
        for disc in result.discs:
            if disc.confidence < minimum_confidence:
                continue
            position = [float(x) for x in disc.position_ras]
            index = markups_node.AddControlPoint(position, disc.name)
            markups_node.SetNthControlPointDescription(index, f"confidence {disc.confidence:.3f}")
        markups_node.SetLocked(bool(locked))
    finally:
        markups_node.EndModify(was_modifying)
    return markups_node


def discs_from_markups(markups_node: Any) -> list[DiscRecord]:
    """Read disc points back from a point list (labels must be disc names like "L4/L5")."""
    records = []
    for index in range(markups_node.GetNumberOfControlPoints()):
        position = np.zeros(3)
        markups_node.GetNthControlPointPosition(index, position)
        description = markups_node.GetNthControlPointDescription(index)
        confidence = 1.0
        if description.startswith("confidence "):
            confidence = float(description.split()[1])
        label = markups_node.GetNthControlPointLabel(index)
        records.append(DiscRecord(disc_number(label), tuple(float(x) for x in position), confidence))
    return records
