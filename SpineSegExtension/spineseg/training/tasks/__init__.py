"""Task adapters: what the training loop needs from each task, and the one table that picks it.

An adapter turns a data split into batches, losses, validation scores and a
model manifest, built from its task package's networks, losses and samplers
(:mod:`.vertebrae` for the iterative FCN, :mod:`.discs` for the attention
hourglass). Training sits above the task packages: it imports them, they
never import it.
"""

from __future__ import annotations

from typing import Protocol, Self

import numpy as np
import torch
from torch import nn

from ..config import Task, TrainingConfig
from ..datasets import DataSplit
from .discs import DiscTask
from .vertebrae import VertebraTask

__all__ = ["TrainingTask", "ADAPTERS", "build_task"]


class TrainingTask(Protocol):
    """What the loop needs from a task; ``validation_metrics[0]`` is ``"score"`` (higher is better)."""

    loss_terms: tuple[str, ...]
    validation_metrics: tuple[str, ...]
    rng: np.random.Generator  # draws the batches; saved in checkpoints

    @classmethod
    def from_split(cls, config: TrainingConfig, split: DataSplit, rng: np.random.Generator) -> Self: ...

    @property
    def has_validation(self) -> bool: ...

    def build_network(self) -> nn.Module: ...

    def next_batch(self, device: torch.device) -> dict[str, torch.Tensor]: ...

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def validate(self, network: nn.Module, device: torch.device) -> dict[str, float]: ...

    def manifest(self) -> dict: ...

    def describe_data(self) -> str: ...


ADAPTERS: dict[Task, type[TrainingTask]] = {Task.VERTEBRAE: VertebraTask, Task.DISCS: DiscTask}


def build_task(config: TrainingConfig, split: DataSplit, rank: int) -> TrainingTask:
    """The adapter of ``config.task`` on ``split``; process ``rank`` draws batches seeded with ``seed + 1 + rank``."""
    return ADAPTERS[config.task].from_split(config, split, np.random.default_rng(config.seed + 1 + rank))
