"""The user's two choices for every run, shared by the CLI, the batch script, Slicer and training.

Torch-free on purpose: the Slicer module types its parameter node with these
enums at start-up, before PyTorch may be installed.
"""

from __future__ import annotations

import enum

__all__ = ["Task", "DeviceChoice"]


class _Choice(enum.StrEnum):
    """A choice whose wrong value gets an error that lists the right ones."""

    @classmethod
    def _missing_(cls, value: object) -> None:
        what = {"Task": "task", "DeviceChoice": "device"}.get(cls.__name__, cls.__name__)
        raise ValueError(f"{what} must be one of {', '.join(member.value for member in cls)}; got {value!r}")


class Task(_Choice):
    """The built-in tasks, for typed settings (Slicer's parameter node, training): segment vertebrae in a CT, or
    label discs in an MRI. What a task is lives in its spec (:mod:`spineseg.tasks`), which knows other tasks too."""

    VERTEBRAE = "vertebrae"
    DISCS = "discs"

    def label(self) -> str:
        """The words a user picks this by (Slicer's combo box shows them)."""
        from . import tasks

        return tasks.get(self.value).label


class DeviceChoice(_Choice):
    """Where the networks run: 'auto' takes a CUDA GPU when there is one."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self) -> str:
        """The words a user picks this by (Slicer's combo box shows them)."""
        return {"auto": "Auto", "cpu": "CPU", "cuda": "GPU (CUDA)"}[self.value]
