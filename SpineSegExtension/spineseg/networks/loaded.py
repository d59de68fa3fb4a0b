"""What both task models share: a network in evaluation mode on its device, its settings, where it came from."""

from __future__ import annotations

from typing import Any

import torch

from ..devices import resolve_device

__all__ = ["LoadedModel"]


class LoadedModel:
    """Base of :class:`~spineseg.networks.vertebra_model.VertebraModel` and :class:`~spineseg.networks.disc_model.DiscModel`.

    Args:
        network: the torch module; put in evaluation mode on ``device``.
        settings: the task's input settings (spacing, patch or slab size) the network was trained with.
        device: "auto", "cpu", "cuda" or a torch device.
        entry: the :class:`spineseg.model_store.ModelEntry` the model was loaded from; None for a model
            built in memory (typed loosely so that the networks do not depend on the model store).
    """

    def __init__(self, network: torch.nn.Module, settings: Any, device: str | torch.device = "auto",
                 entry: Any = None) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.network = network.to(self.device).eval()
        self.settings = settings
        self.entry = entry

    @property
    def name(self) -> str:
        return self.entry.name if self.entry else "in-memory model"

    def provenance(self) -> dict[str, Any]:
        """What an output file records about this model."""
        if self.entry is None:
            return {"name": self.name, "version": None, "sha256": None}
        return self.entry.provenance()
