"""The Slicer module's logic without the GUI: start a task in the background, turn its files into nodes.

``SpineSeg.py``'s ``SpineSegLogic`` is this class plus Slicer's parameter node;
keeping the work here means it imports no ``qt`` and takes its scene as an
argument, so tests drive exactly what the panel drives on slicer-core.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spineseg import tasks
from spineseg.choices import DeviceChoice, Task
from spineseg.model_store import list_models, model_summary
from spineseg.summary import RunSummary, model_caveat

from . import handoff, markups, process, scene, segmentations, volumes

__all__ = ["CORE_PARENT", "TaskLogic", "ModelChoice"]

# The folder holding the ``spineseg`` package (SpineSegLib's parent), put first on the child's path.
CORE_PARENT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ModelChoice:
    """A bundled model as the panel's model list shows it."""

    name: str
    summary: str
    default: bool

    @property
    def text(self) -> str:
        return f"{self.name}{' (default)' if self.default else ''}: {self.summary}"


class TaskLogic:
    """Runs SpineSeg tasks on volume nodes of one scene.

    Args:
        context: the scene and logics to build nodes in; None means the running Slicer application's.
        python_executable: the interpreter of the background process (default: PythonSlicer, else this Python).
    """

    def __init__(self, context: scene.SceneContext | None = None, python_executable: str | None = None) -> None:
        self.context = context
        self.python_executable = python_executable

    def sceneContext(self) -> scene.SceneContext:
        context = self.context or scene.running_slicer_context()
        if context is None:
            raise RuntimeError("no scene: pass a SceneContext outside the Slicer application")
        return context

    def startTask(self, inputVolume: Any, task: Task | str, device: DeviceChoice | str = DeviceChoice.AUTO,
                  model: str = "", forceModality: bool = False) -> handoff.SlicerJob:
        """Start ``spineseg TASK`` on the volume in a background process; returns at once.

        Raises:
            ValueError: no input volume, or an unknown task or device.
        """
        return handoff.start_job(inputVolume, task, CORE_PARENT, device, model or None, self.python_executable,
                                 forceModality)

    def importResults(self, job: handoff.SlicerJob, outputSegmentation: Any = None, outputMarkups: Any = None,
                      show3D: bool = True, smoothingFactor: float = 0.5, minimumConfidence: float = 0.0) -> Any:
        """Turn a finished job's files into a segmentation or markups node, beside the input in the data tree."""
        context = self.sceneContext()
        result = handoff.load_results(job)
        if handoff.panel_output(job.task) == "segmentation":
            output = segmentations.segmentation_from_result(
                context.scene, context.segmentations_logic, result, job.input_node, outputSegmentation,
                show_3d=show3D, smoothing_factor=smoothingFactor,
            )
        else:
            output = markups.markups_from_discs(context.scene, result, job.input_node, outputMarkups,
                                                minimum_confidence=minimumConfidence)
        scene.place_in_study(context.scene, job.input_node, [output])
        return output

    def waitForJob(self, job: handoff.SlicerJob, timeout: float = 1800.0, keepAlive=None) -> None:
        """Block until the job ends, calling ``keepAlive()`` (Slicer's event loop) between polls.

        Raises:
            TimeoutError: it ran longer than ``timeout`` seconds (it is cancelled).
            RuntimeError: it failed or was cancelled (the message is the process's last error line).
        """
        deadline = time.monotonic() + timeout
        while not job.process.finished:
            job.process.poll()
            if keepAlive is not None:
                keepAlive()
            if time.monotonic() > deadline:
                job.cancel()
                raise TimeoutError(f"SpineSeg {job.task} did not finish within {timeout:.0f} s")
            time.sleep(0.05)
        if job.process.state is not process.ProcessState.SUCCEEDED:
            raise RuntimeError(f"SpineSeg {job.task} failed: {job.process.error_message}")

    @staticmethod
    def modelChoices(task: Task | str) -> list[ModelChoice]:
        """The bundled models of a task, the default first, each with its card's one-line summary."""
        spec = tasks.get(task)
        choices = []
        for entry in list_models(spec):
            choices.append(ModelChoice(entry.name, model_summary(entry), entry.name == spec.default_model))
        return sorted(choices, key=lambda choice: not choice.default)

    @staticmethod
    def modelCaveat(model: str, task: Task | str) -> str:
        """What the chosen model's card says about trusting it ("" for a model without a card); an empty
        ``model`` is the task's bundled default."""
        caveat = model_caveat(model or None, task)
        return f"Check every result: {caveat}" if caveat else ""

    @staticmethod
    def runSummary(job: handoff.SlicerJob) -> RunSummary:
        """What a finished job found, read from the files it wrote."""
        return RunSummary.from_folder(job.task, job.output_folder)

    @staticmethod
    def statusText(summary: RunSummary, seconds: float) -> str:
        """The status line after a run: time, what was found, how it was named, warnings, the model's caveat."""
        warnings = f" Warning: {' '.join(summary.warnings)}" if summary.warnings else ""
        caveat = f" Check every result: {summary.caveat}" if summary.caveat else ""
        return f"Done in {seconds:.0f} s: {summary.headline()}.{warnings}{caveat}"

    def loadDicomSeries(self, folder: str | os.PathLike, seriesUid: str) -> Any:
        """Read one series of a DICOM folder into a new volume node named after the series (for a folder that
        holds several, which ``spineseg`` refuses to choose between).

        Raises:
            spineseg.errors.InputError: the series is not in the folder or cannot be read.
        """
        from spineseg.io import list_dicom_series, read_volume

        series = {item.uid: item for item in list_dicom_series(folder)}
        volume = read_volume(folder, series=seriesUid)
        name = (series[seriesUid].description if seriesUid in series else "") or Path(folder).name
        return volumes.node_from_volume(self.sceneContext().scene, volume, name)
