"""One process or several: the torchrun environment, process groups and small collectives.

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; without them the run is a single process. Several processes
use NCCL on CUDA GPUs (one GPU per process, ``cuda:LOCAL_RANK``) and gloo on
CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..devices import resolve_device

__all__ = ["Processes", "start_processes", "stop_processes", "gather", "barrier"]


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """The first process writes the run folder; the others only train."""
        return self.rank == 0


def start_processes(device_choice: str) -> Processes:
    """Join the process group when launched by torchrun; otherwise a single process."""
    device = resolve_device(device_choice)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes(0, 1, device)
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world_size, device)


def stop_processes(processes: Processes) -> None:
    if processes.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def gather(processes: Processes, value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (on every process)."""
    if processes.world_size == 1:
        return [value]
    values: list[Any] = [None] * processes.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(processes: Processes) -> None:
    if processes.world_size > 1:
        dist.barrier()
