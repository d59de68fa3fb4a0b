"""SpineSeg's terminology context: the file, loading it into Slicer's terminologies logic, and tagging point lists.

The context (``Resources/Terminology/SegmentationCategoryTypeModifier-SpineSeg.term.json``)
lists every vertebra C1-L6, T13, the sacrum and the intervertebral disc with
their codes and recommended colours; its name is
:data:`spineseg.labels.TERMINOLOGY_CONTEXT`. Once it is loaded, Slicer's
terminology picker shows SpineSeg's segments by name and colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import slicer

from spineseg.labels import INTERVERTEBRAL_DISC, TERMINOLOGY_CONTEXT, slicer_terminology_entry

__all__ = ["TERMINOLOGY_FILE", "load_terminology", "set_disc_terminology"]

# SpineSegLib/ and Resources/ sit side by side, in the source tree and in an installed extension.
TERMINOLOGY_FILE = (
    Path(__file__).resolve().parents[1] / "Resources" / "Terminology" / "SegmentationCategoryTypeModifier-SpineSeg.term.json"
)


def load_terminology(terminologies_logic: Any) -> str:
    """Load SpineSeg's terminology context into ``terminologies_logic`` unless it is there; returns its name.

    Raises:
        RuntimeError: the file is missing or Slicer could not read it as a terminology.
    """
    if terminologies_logic.IsTerminologyContextLoaded(TERMINOLOGY_CONTEXT):
        return TERMINOLOGY_CONTEXT
    name = terminologies_logic.LoadTerminologyFromFile(str(TERMINOLOGY_FILE)) if TERMINOLOGY_FILE.is_file() else ""
    if name != TERMINOLOGY_CONTEXT:
        raise RuntimeError(f"could not load the SpineSeg terminology from {TERMINOLOGY_FILE} (got context {name!r})")
    return name


def set_disc_terminology(markups_node: Any) -> None:
    """Mark a point list as intervertebral discs in SpineSeg's terminology context."""
    slicer.vtkSlicerTerminologiesModuleLogic.SetTerminologyEntryAsString(
        markups_node, slicer_terminology_entry(INTERVERTEBRAL_DISC)
    )
