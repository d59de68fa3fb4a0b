"""One job per task, file in and files out: what the CLI, the batch script and Slicer all run.

A job reads the input, checks it, loads the model, predicts, and writes the
chosen outputs into a folder. Outputs are staged and moved into place together
(:func:`spineseg.publish.output_directory`), so a failed or interrupted job leaves
nothing behind, and the three front ends write the same files with the same
JSON schema because they share this code.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .checks import repair_impossible_hounsfield
from .choices import DeviceChoice, Task
from .errors import InputError
from .io import read_input, write_volume
from .publish import output_directory
from .labels import vertebra_name
from .progress import ProgressCallback, no_progress, scaled
from .results import DiscsResult, VertebraeResult
from .volume import Volume

__all__ = ["OUTPUT_NAMES", "PICTURE_NAMES", "JobResult", "output_names", "run_job", "run_vertebrae", "run_discs"]

# The JSON comes last: it is published last and marks a complete set (see spineseg.publish.output_directory).
OUTPUT_NAMES: dict[Task, tuple[str, ...]] = {
    Task.VERTEBRAE: ("vertebrae.nii.gz", "vertebrae.seg.nrrd", "vertebrae.png", "vertebrae.json"),
    Task.DISCS: ("discs.mrk.json", "discs.png", "discs.json"),
}
PICTURE_NAMES = {Task.VERTEBRAE: "vertebrae.png", Task.DISCS: "discs.png"}
# The DICOM modality (0008,0060) each task reads from a folder holding several series.
DICOM_MODALITY = {Task.VERTEBRAE: "CT", Task.DISCS: "MR"}

# (volume, model=, device=, progress=, force_modality=) -> result; the core's segment_vertebrae / label_discs by default.
Predictor = Callable[..., Any]


@dataclass(frozen=True)
class JobResult:
    """What a job produced: the result in memory, the input it read and the files it wrote."""

    task: Task
    image: Volume
    result: VertebraeResult | DiscsResult
    outputs: dict[str, Path] = field(default_factory=dict)


def output_names(task: Task | str, picture: bool = True) -> list[str]:
    """The files a job of ``task`` writes, with or without its picture; the JSON, which marks a complete set, last."""
    task = Task(task)
    return [name for name in OUTPUT_NAMES[task] if picture or name != PICTURE_NAMES[task]]


def run_vertebrae(input_path: str | os.PathLike, output_dir: str | os.PathLike, **options: Any) -> JobResult:
    """Segment and name the vertebrae of a CT file; see :func:`run_job` for the options."""
    return run_job(Task.VERTEBRAE, input_path, output_dir, **options)


def run_discs(input_path: str | os.PathLike, output_dir: str | os.PathLike, **options: Any) -> JobResult:
    """Find and name the discs of an MRI file; see :func:`run_job` for the options."""
    return run_job(Task.DISCS, input_path, output_dir, **options)


def run_job(
    task: Task | str,
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    model: Any = None,
    device: DeviceChoice | str = DeviceChoice.AUTO,
    overwrite: bool = False,
    picture: bool = True,
    input_name: str | None = None,
    reference: Volume | None = None,
    progress: ProgressCallback = no_progress,
    predict: Predictor | None = None,
    force_modality: bool = False,
    series: str | None = None,
) -> JobResult:
    """Read, load the model, predict (the task checks its input first) and write the outputs into ``output_dir``.

    Args:
        task: vertebrae (CT) or discs (MRI).
        input_path: anything :func:`spineseg.io.read_input` reads (its warnings go into the JSON).
        output_dir: created if missing; existing outputs need ``overwrite``.
        model: None (bundled), a bundled name, a manifest or weights path, or a loaded model.
        device: where a model loaded here runs.
        overwrite: replace the existing outputs of this task (all of them, the picture too).
        picture: also draw the PNG (needs matplotlib).
        input_name: what the JSON records as the input (default: ``input_path``); Slicer passes
            the file the volume was loaded from, so its JSON matches the CLI's.
        reference: a label map on the input's grid; a mismatch is refused before any work.
        progress: ``(fraction, message)`` callback; raising in it cancels.
        predict: replaces the core's task function (tests use fast stand-ins).
        force_modality: run even if the image looks like the other modality (see :mod:`spineseg.checks`).
        series: for a DICOM folder, the series UID to read (default: the only series of the task's modality).

    Raises:
        InputError: unreadable or unusable input, a reference off the input's grid, outputs in the way, or an
            output folder that cannot be written (checked before predicting).
        ModelError: the model cannot be loaded.
        CancelledError: interrupted; its ``written`` lists the outputs if they were complete by then.
    """
    from .model_store import load_model

    task = Task(task)
    # No progress report before the task has checked its input, so that a bad input's error prints alone.
    image, input_warnings = read_input(input_path, modality=DICOM_MODALITY[task], series=series)
    if task is Task.VERTEBRAE:
        image, repaired = repair_impossible_hounsfield(image)
        input_warnings += repaired
    if reference is not None and not reference.same_grid(image):
        raise InputError("the reference label map is not on the input's grid (shape or geometry differ)")
    loaded = load_model(task, model, device)
    names = output_names(task, picture)
    older = [name for name in OUTPUT_NAMES[task] if name not in names]  # an old picture must not outlive its set
    with output_directory(output_dir, names, overwrite, stale=older) as staging:
        result = (predict or _predictors()[task])(image, model=loaded, device=device,
                                                    progress=scaled(progress, 0.03, 0.9),
                                                    force_modality=force_modality)
        if input_warnings:  # what was corrected (a gantry tilt, hot pixels) belongs with the input's other warnings
            result = dataclasses.replace(result, warnings=[*input_warnings, *result.warnings])
        progress(0.9, f"writing {', '.join(names)}")
        source = str(input_path) if input_name is None else input_name
        _write_outputs(task, image, result, staging, names, source, loaded.provenance())
    progress(1.0, f"wrote {len(names)} files to {output_dir}")
    return JobResult(task, image, result, {name: Path(output_dir) / name for name in names})


def _write_outputs(task: Task, image: Volume, result: Any, folder: Path, names: list[str], source: str,
                   model: dict[str, Any]) -> None:
    from . import pictures, writers

    writers.write_json(writers.result_table(result, source, model), folder / f"{task.value}.json")
    if task is Task.VERTEBRAE:
        write_volume(result.label_map, folder / "vertebrae.nii.gz")
        writers.write_segmentation_nrrd(result, folder / "vertebrae.seg.nrrd")
        if "vertebrae.png" in names:
            found = ", ".join(vertebra_name(level) for level in result.levels) or "no vertebra found"
            pictures.write_vertebrae_picture(image, result, folder / "vertebrae.png", title=found)
    else:
        writers.write_markups(result, folder / "discs.mrk.json")
        if "discs.png" in names:
            title = f"{Path(source).name}: {len(result.discs)} discs"
            pictures.write_discs_picture(result, folder / "discs.png", title=title)


def _predictors() -> dict[Task, Predictor]:
    from .discs.pipeline import label_discs
    from .vertebrae.pipeline import segment_vertebrae

    return {Task.VERTEBRAE: segment_vertebrae, Task.DISCS: label_discs}
