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

from . import tasks
from .checks import repair_impossible_hounsfield
from .choices import DeviceChoice
from .errors import InputError
from .io import read_input
from .publish import output_directory
from .progress import ProgressCallback, no_progress, scaled
from .tasks import TaskSpec
from .volume import Volume

__all__ = ["JobResult", "output_names", "run_job", "run_vertebrae", "run_discs"]

# (volume, model=, device=, progress=, force_modality=) -> result; the task spec's predictor by default.
Predictor = Callable[..., Any]


@dataclass(frozen=True)
class JobResult:
    """What a job produced: the result in memory, the input it read and the files it wrote.

    ``task`` is the task's name (a :class:`~spineseg.choices.Task` for the built-in ones)."""

    task: str
    image: Volume
    result: Any
    outputs: dict[str, Path] = field(default_factory=dict)


def output_names(task: TaskSpec | str, picture: bool = True) -> list[str]:
    """The files a job of ``task`` writes, with or without its picture; the JSON, which marks a complete set
    (see :func:`spineseg.publish.output_directory`), last."""
    spec = tasks.get(task)
    return [name for name in spec.output_names if picture or name != spec.picture_name]


def run_vertebrae(input_path: str | os.PathLike, output_dir: str | os.PathLike, **options: Any) -> JobResult:
    """Segment and name the vertebrae of a CT file; see :func:`run_job` for the options."""
    return run_job("vertebrae", input_path, output_dir, **options)


def run_discs(input_path: str | os.PathLike, output_dir: str | os.PathLike, **options: Any) -> JobResult:
    """Find and name the discs of an MRI file; see :func:`run_job` for the options."""
    return run_job("discs", input_path, output_dir, **options)


def run_job(
    task: TaskSpec | str,
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
        task: a task's name or spec (vertebrae in CT, discs in MRI, or one registered in spineseg.tasks).
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

    spec = tasks.get(task)
    # No progress report before the task has checked its input, so that a bad input's error prints alone.
    image, input_warnings = read_input(input_path, modality=spec.dicom_modality, series=series)
    if spec.input_checks.modality == "CT":
        image, repaired = repair_impossible_hounsfield(image)
        input_warnings += repaired
    if reference is not None and not reference.same_grid(image):
        raise InputError("the reference label map is not on the input's grid (shape or geometry differ)")
    loaded = load_model(spec, model, device)
    names = output_names(spec, picture)
    older = [name for name in spec.output_names if name not in names]  # an old picture must not outlive its set
    with output_directory(output_dir, names, overwrite, stale=older) as staging:
        result = (predict or _predictor(spec))(image, model=loaded, device=device,
                                               progress=scaled(progress, 0.03, 0.9),
                                               force_modality=force_modality)
        if input_warnings:  # what was corrected (a gantry tilt, hot pixels) belongs with the input's other warnings
            result = dataclasses.replace(result, warnings=[*input_warnings, *result.warnings])
        progress(0.9, f"writing {', '.join(names)}")
        source = str(input_path) if input_name is None else input_name
        spec.load("writer")(image, result, staging, names, source, loaded.provenance())
    progress(1.0, f"wrote {len(names)} files to {output_dir}")
    return JobResult(spec.name, image, result, {name: Path(output_dir) / name for name in names})


def _predictor(spec: TaskSpec) -> Predictor:
    """The task's predictor (tests replace this to run a fast stand-in everywhere a job runs)."""
    return spec.load("predictor")
