"""Checkpoints that survive being interrupted, and load without running code.

A checkpoint is a folder ``RUNDIR/checkpoints/iter-NNNNNNN/`` holding

* ``weights.safetensors``: the network's state dict;
* ``optimiser.pt``: optimiser and gradient-scaler state plus each process's
  torch random state (tensors and numbers only, read back with
  ``torch.load(weights_only=True)``);
* ``state.json``: iteration, each process's numpy generator state, the best
  validation so far.

It is written into a hidden ``.partial-*`` folder, synced, renamed into
place, and only then does ``latest.json`` (replaced atomically) point at it;
older checkpoints are removed after that. A run killed at any moment thus
leaves the previous checkpoint complete and pointed to.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..errors import InputError, ModelError
from ..publish import atomic_path, readable_by_others

__all__ = ["Checkpoint", "write_checkpoint", "read_latest_checkpoint", "has_checkpoint", "require_checkpoint",
           "save_weights",
           "load_weights"]

POINTER = "latest.json"


@dataclass
class Checkpoint:
    """The complete state of a run after ``iteration`` iterations (random states: one per process)."""

    iteration: int
    weights: dict[str, torch.Tensor]
    optimiser: dict
    scaler: dict
    numpy_rng: list[dict]
    torch_rng: list[torch.Tensor]
    cuda_rng: list[list[torch.Tensor]]
    seconds: float = 0.0  # training wall time so far, over all sessions
    best: dict | None = None  # {"iteration": n, "score": s} of the best validation so far


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_weights(path: str | Path, weights: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Write a state dict as safetensors, atomically; ``metadata`` (JSON-able) is stored in the header."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={"spineseg": json.dumps(metadata)} if metadata else None)


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Inverse of :func:`save_weights`: the state dict and its metadata."""
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    return load_file(str(path)), json.loads(header["spineseg"]) if "spineseg" in header else None


def write_checkpoint(directory: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` under ``directory`` and make it the latest; returns its folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"iter-{checkpoint.iteration:07d}"
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=directory))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in checkpoint.weights.items()},
                  str(partial / "weights.safetensors"))
        torch.save({"optimiser": checkpoint.optimiser, "scaler": checkpoint.scaler,
                    "torch_rng": checkpoint.torch_rng, "cuda_rng": checkpoint.cuda_rng}, partial / "optimiser.pt")
        state = {"iteration": checkpoint.iteration, "seconds": checkpoint.seconds, "best": checkpoint.best,
                 "numpy_rng": checkpoint.numpy_rng}
        (partial / "state.json").write_text(json.dumps(state, indent=1) + "\n")
        for path in partial.iterdir():
            _sync(path)
        _sync(partial)
        readable_by_others(partial)  # mkdtemp made it private
        final = directory / name
        if final.exists():  # left by a run that died before pointing at it
            shutil.rmtree(final)
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    with atomic_path(directory / POINTER) as temporary:
        temporary.write_text(json.dumps({"iteration": checkpoint.iteration, "folder": name}) + "\n")
    for old in directory.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def has_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` (a run's ``checkpoints/``) has a checkpoint to resume from."""
    return (Path(directory) / POINTER).is_file()


def require_checkpoint(directory: str | Path) -> None:
    """Raise InputError when ``directory`` (a run's ``checkpoints/``) has no checkpoint to resume from."""
    if not has_checkpoint(directory):
        raise InputError(f"no checkpoint to resume from in {directory}; start the run without --resume")


def _checkpoint_folder(directory: Path) -> Path:
    """The folder ``latest.json`` names: a plain folder directly in ``directory``, nothing elsewhere.

    Raises:
        ModelError: the index names a path (``..``, absolute, nested, a link) rather than a checkpoint folder.
    """
    name = json.loads((directory / POINTER).read_text())["folder"]
    folder = directory / str(name)
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..") or folder.is_symlink():
        raise ModelError(f"{directory / POINTER} names {name!r}, not a checkpoint folder in {directory}; "
                         "it is refused (start a new run folder)")
    return folder


def read_latest_checkpoint(directory: str | Path) -> Checkpoint:
    """Load the checkpoint ``latest.json`` points at; the optimiser state loads as tensors only (no code runs).

    Raises:
        InputError: there is none.
        ModelError: it cannot be read, holds more than tensors and numbers, or its index points elsewhere.
    """
    directory = Path(directory)
    require_checkpoint(directory)
    try:
        folder = _checkpoint_folder(directory)
        state = json.loads((folder / "state.json").read_text())
        weights = load_file(str(folder / "weights.safetensors"))
        stored = torch.load(folder / "optimiser.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: the one thing not to do
        raise ModelError(f"{folder / 'optimiser.pt'} holds more than tensors and numbers and is refused unloaded "
                         "(it could run code); start a new run folder") from None
    except (OSError, KeyError, TypeError, json.JSONDecodeError, SafetensorError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"the checkpoint in {directory} cannot be read ({first_line}); "
                         "start a new run folder") from None
    return Checkpoint(state["iteration"], weights, stored["optimiser"], stored["scaler"], state["numpy_rng"],
                      stored["torch_rng"], stored["cuda_rng"], state["seconds"], state["best"])
