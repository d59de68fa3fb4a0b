"""What a task is, in one place: one :class:`TaskSpec` per task, looked up by name.

Each task package defines its spec beside its code (``spineseg/vertebrae/task.py``,
``spineseg/discs/task.py``); the CLI, the jobs, the model store, the input checks,
the writers, the batch program and the Slicer panel read it instead of asking
"is this the vertebra task?". Adding a task is one package with a ``task.py``
plus one line in :data:`BUILT_IN` (or, for a test or a plug-in, :func:`register`).

Torch-free on purpose: the Slicer module reads the specs at start-up. The heavy
parts of a spec (predictor, writer, model classes) are ``"module:name"``
references imported on first use (:meth:`TaskSpec.load`); the built-in specs are
loaded by module name for the same reason, which also keeps this module below
the task packages in the import graph.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["InputProfile", "PanelOptions", "TaskSpec", "BUILT_IN", "get", "names", "specs", "register",
           "unregister"]


@dataclass(frozen=True)
class InputProfile:
    """What :func:`spineseg.checks.check_input` demands of a task's image.

    Attributes:
        modality: "CT": Hounsfield units (fat or air present, plausible values; impossible voxels are repaired
            before the checks); "MR": an image that looks like a CT is refused; "": any image.
        min_extent_mm: the image must span this along every axis (0: no limit).
        extent_refusal: the refusal below it; ``{extent}`` (mm per axis) and ``{minimum}`` are filled in.
        min_cross_section_mm: the image must span this across its two larger axes (0: no limit).
        cross_section_refusal: the refusal below it, filled in the same way.
        max_anisotropy: warn when a voxel is more than this many times longer than wide (0: no warning).
    """

    modality: str = ""
    min_extent_mm: float = 0.0
    extent_refusal: str = ""
    min_cross_section_mm: float = 0.0
    cross_section_refusal: str = ""
    max_anisotropy: float = 0.0


@dataclass(frozen=True)
class PanelOptions:
    """What the Slicer panel offers for a task.

    Attributes:
        apply_text: the Apply button's words.
        output: the node the results become: "segmentation" (a label map, one segment per label) or
            "markups" (a point list).
    """

    apply_text: str
    output: str


@dataclass(frozen=True)
class TaskSpec:
    """Everything the front ends need to know about one task.

    Attributes:
        name: the task's name: the CLI subcommand, the JSON file's stem, the manifest's ``task``.
        label: the words a user picks it by (Slicer's combo box).
        help: one line for the CLI.
        image: the image it reads, with its article ("a CT"), for messages.
        items: what it finds, singular and plural ("vertebra", "vertebrae").
        dicom_modality: the DICOM modality (0008,0060) it reads from a folder holding several series.
        output_names: the files a job writes; the JSON, which marks a complete set, last.
        picture_name: the one of ``output_names`` that is the picture ("" for none).
        default_model: the bundled model it runs unless told otherwise.
        input_checks: what its input must be.
        predictor: ``(volume, model=, device=, progress=, force_modality=) -> result``.
        result_type: the result class; it gives the JSON's task part (``table``) and reads a run's naming back
            (``naming_summary``).
        writer: ``(image, result, folder, names, source, model_provenance) -> None``, writes ``output_names``.
        model_class, settings_class, network_class: the loaded model, its input settings (``from_manifest``)
            and the network its manifest's ``architecture.type`` must name.
        panel: the Slicer panel's options (None: the panel does not offer the task).
        reference_scorer: ``(image, result, reference) -> None``, prints the result's scores against a reference
            label map; when set, the CLI offers ``--reference`` (None: it does not).
        current_layout: ``(manifest) -> manifest``, moves a manifest written in an earlier layout (a model a user
            trained with an earlier version) to today's; None where the task never had another.
    """

    name: str
    label: str
    help: str
    image: str
    items: tuple[str, str]
    dicom_modality: str
    output_names: tuple[str, ...]
    picture_name: str
    default_model: str
    input_checks: InputProfile
    predictor: Any
    result_type: Any
    writer: Any
    model_class: Any
    settings_class: Any
    network_class: Any
    panel: PanelOptions | None = None
    reference_scorer: Any = None
    current_layout: Any = None

    def load(self, field: str) -> Any:
        """The object a field names: a ``"module:name"`` reference is imported now, anything else is returned."""
        value = getattr(self, field)
        if not isinstance(value, str):
            return value
        module, _, name = value.partition(":")
        return getattr(importlib.import_module(module), name)


# The built-in tasks: name -> the module whose ``SPEC`` describes it.
BUILT_IN = {
    "vertebrae": "spineseg.vertebrae.task",
    "discs": "spineseg.discs.task",
}

_registered: dict[str, TaskSpec] = {}


def _registry() -> dict[str, TaskSpec]:
    for name, module in BUILT_IN.items():
        if name not in _registered:
            _registered[name] = importlib.import_module(module).SPEC
    return _registered


def get(task: Any) -> TaskSpec:
    """The spec of a task given by name (a :class:`spineseg.choices.Task` is a name) or by spec.

    Raises:
        ValueError: no such task; the message lists the known ones.
    """
    if isinstance(task, TaskSpec):
        return task
    registry = _registry()
    if task not in registry:
        raise ValueError(f"task must be one of {', '.join(registry)}; got {str(task)!r}")
    return registry[task]


def names() -> list[str]:
    """The known tasks' names, built-in first."""
    return list(_registry())


def specs() -> list[TaskSpec]:
    """The known tasks' specs, built-in first."""
    return list(_registry().values())


def register(spec: TaskSpec) -> None:
    """Add a task (a plug-in's, a test's).

    Raises:
        ValueError: a task of that name is known already.
    """
    if spec.name in _registry():
        raise ValueError(f"a task named {spec.name!r} is registered already")
    _registered[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a task added with :func:`register` (built-in tasks stay)."""
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in task")
    _registered.pop(name, None)
