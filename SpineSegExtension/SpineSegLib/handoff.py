"""Hand a volume node to a SpineSeg job in a background process, and take its results back.

The Slicer module's logic is these two steps plus node building: the node is
written to a temporary NRRD (uncompressed: writing is on the GUI thread, and
the file lives only as long as the job), ``spineseg TASK`` runs on it in a child
process (:mod:`SpineSegLib.process`), and the files the job wrote are read back
(:mod:`SpineSegLib.storage`). The JSON records the file the volume was loaded
from, so it matches what the CLI and the batch script write for that file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spineseg import tasks
from spineseg.choices import DeviceChoice
from spineseg.results import DiscsResult, VertebraeResult

from . import process, storage

__all__ = ["READERS", "SlicerJob", "start_job", "input_name_of", "panel_output", "load_results"]


@dataclass
class SlicerJob:
    """One background run: its task's name, its temporary folder, the child process and the node it works on."""

    task: str
    input_node: Any
    folder: Path
    process: process.BackgroundProcess
    started: float = field(default_factory=time.monotonic)

    @property
    def output_folder(self) -> Path:
        return self.folder / "output"

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def cancel(self) -> None:
        self.process.cancel()

    def remove_files(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def input_name_of(volume_node: Any) -> str:
    """The file the node was loaded from, or its name when it was made in the scene."""
    storage_node = volume_node.GetStorageNode()
    file_name = storage_node.GetFileName() if storage_node is not None else None
    return file_name or volume_node.GetName()


def start_job(
    volume_node: Any,
    task: tasks.TaskSpec | str,
    core_parent: str | os.PathLike,
    device: DeviceChoice | str = DeviceChoice.AUTO,
    model: str | None = None,
    python_executable: str | None = None,
    force_modality: bool = False,
) -> SlicerJob:
    """Write the node to a temporary NRRD and start ``spineseg TASK`` on it; returns at once.

    Args:
        core_parent: the folder holding the ``spineseg`` package (put first on the child's path).
        python_executable: PythonSlicer by default.
        force_modality: run even if the volume does not look like the task's modality (CT or MRI).

    Raises:
        ValueError: no input volume, or it holds no image; a task the panel does not offer.
        OSError: the temporary copy could not be written.
    """
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("Select an input volume that holds an image.")
    panel_output(task)  # refuses a task the panel does not offer
    task, device = tasks.get(task).name, DeviceChoice(device)
    folder = Path(tempfile.mkdtemp(prefix="SpineSeg-"))
    input_path = folder / "input.nrrd"
    try:
        storage.write_input_volume(volume_node, input_path)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    command = process.cli_command(python_executable or process.default_python(), task, input_path,
                                  folder / "output", device, model or None, input_name_of(volume_node),
                                  force_modality)
    runner = process.BackgroundProcess(command, env=process.child_environment(core_parent, device))
    runner.start()
    return SlicerJob(task, volume_node, folder, runner)


# The panel's output kinds (spineseg.tasks.PanelOptions.output) -> the reader of the files a job wrote.
READERS = {"segmentation": storage.load_vertebrae_outputs, "markups": storage.load_discs_outputs}


def panel_output(task: tasks.TaskSpec | str) -> str:
    """The node kind the panel turns a task's results into (``PanelOptions.output``).

    Raises:
        ValueError: the task is unknown, or the panel does not offer it.
    """
    spec = tasks.get(task)
    if spec.panel is None or spec.panel.output not in READERS:
        raise ValueError(f"the Slicer panel does not offer the {spec.name} task")
    return spec.panel.output


def load_results(job: SlicerJob) -> VertebraeResult | DiscsResult:
    """The result a finished job wrote, read from its files."""
    return READERS[panel_output(job.task)](job.output_folder)
