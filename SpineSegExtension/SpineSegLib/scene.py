"""A scene with the logics the glue needs, in real Slicer or on slicer-core alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import slicer

__all__ = ["SceneContext", "create_headless_context", "running_slicer_context", "current_context", "place_in_study"]


@dataclass
class SceneContext:
    """The scene plus the logics that build segmentations and markups in it."""

    scene: Any  # vtkMRMLScene
    segmentations_logic: Any  # vtkSlicerSegmentationsModuleLogic
    markups_logic: Any  # vtkSlicerMarkupsLogic
    application_logic: Any = None  # kept alive with the scene when created here


def running_slicer_context() -> SceneContext | None:
    """The application's scene and logics, or None outside the Slicer application."""
    if getattr(slicer, "mrmlScene", None) is None or not hasattr(slicer, "modules"):
        return None
    return SceneContext(
        scene=slicer.mrmlScene,
        segmentations_logic=slicer.modules.segmentations.logic(),
        markups_logic=slicer.modules.markups.logic(),
    )


def create_headless_context() -> SceneContext:
    """A fresh scene with colour, segmentations and markups logics (slicer-core, no application).

    The colour logic is registered as module "Colors" because the volumes code
    looks it up by that name; markups node classes exist only once the markups
    logic has been given the application logic and then the scene.
    """
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    colors = application.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    application.SetModuleLogic("Colors", colors)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    markups = slicer.vtkSlicerMarkupsLogic()
    for logic in (segmentations, markups):
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
    return SceneContext(scene, segmentations, markups, application)


def current_context() -> SceneContext:
    """The running application's scene if there is one, else a new headless scene."""
    return running_slicer_context() or create_headless_context()


def place_in_study(scene: Any, source_node: Any, nodes: list[Any]) -> bool:
    """Put ``nodes`` beside ``source_node`` in the subject hierarchy (same study or folder).

    Returns False, changing nothing, when the scene has no subject hierarchy
    or the source node is not in one.
    """
    get_hierarchy = getattr(slicer, "vtkMRMLSubjectHierarchyNode", None)
    if get_hierarchy is None:
        return False
    hierarchy = get_hierarchy.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return False
    source_item = hierarchy.GetItemByDataNode(source_node)
    if not source_item:
        return False
    parent = hierarchy.GetItemParent(source_item)
    if not parent:
        return False
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:  # without the subject hierarchy logic, new nodes get no item by themselves
            hierarchy.CreateItem(parent, node)
    return True
