"""Choosing the torch device from a user's 'auto', 'cpu' or 'cuda'."""

from __future__ import annotations

import torch

from .choices import DeviceChoice
from .errors import InputError

__all__ = ["resolve_device"]


def resolve_device(choice: str | DeviceChoice = "auto") -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without a GPU is an error."""
    try:
        choice = DeviceChoice(str(choice).lower())
    except ValueError:
        raise InputError(f"device must be one of {[c.value for c in DeviceChoice]}, got {choice!r}") from None
    if choice is DeviceChoice.CUDA and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu")
    if choice is DeviceChoice.CPU or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")
