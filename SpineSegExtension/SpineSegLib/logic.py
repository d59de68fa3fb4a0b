"""The Slicer module's logic without the GUI: start a task in the background, turn its files into nodes.

``SpineSeg.py``'s ``SpineSegLogic`` is this class plus Slicer's parameter node;
keeping the work here means it imports no ``qt`` and takes its scene as an
argument, so tests drive exactly what the panel drives on slicer-core.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from spineseg.choices import DeviceChoice, Task

from . import handoff, markups, process, scene, segmentations

__all__ = ["CORE_PARENT", "TaskLogic"]

# The folder holding the ``spineseg`` package (SpineSegLib's parent), put first on the child's path.
CORE_PARENT = Path(__file__).resolve().parents[1]


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
        if job.task is Task.VERTEBRAE:
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
