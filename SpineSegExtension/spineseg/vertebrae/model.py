"""The vertebra model: the network plus the settings it was trained with.

Load once, predict many: ``VertebraModel.from_checkpoint`` reads a bundled
or user model; the plain constructor takes a network for tests and training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..devices import resolve_device
from ..errors import ModelError
from ..model_store import ModelEntry, find_model, load_state_dict
from ..networks.unet3d import IterativeFCN, IterativeFCNConfig

__all__ = ["VertebraModelSettings", "PatchPrediction", "VertebraModel"]


@dataclass(frozen=True)
class VertebraModelSettings:
    """Input geometry of a model: isotropic spacing (mm) and cube patch size (voxels)."""

    spacing_mm: float = 3.0
    patch_size: int = 40
    network: IterativeFCNConfig = IterativeFCNConfig(filters=16)

    def __post_init__(self) -> None:
        if self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if self.patch_size % self.network.divisor:
            raise ValueError(f"patch_size must be a multiple of {self.network.divisor}, got {self.patch_size}")

    def to_dict(self) -> dict:
        return {"spacing_mm": self.spacing_mm, "patch_size": self.patch_size, "network": self.network.to_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> "VertebraModelSettings":
        return cls(
            spacing_mm=float(values["spacing_mm"]),
            patch_size=int(values["patch_size"]),
            network=IterativeFCNConfig(**values["network"]),
        )


@dataclass
class PatchPrediction:
    """Network output for one patch: mask probability (D x H x W), completeness probability, position."""

    probability: np.ndarray
    completeness: float
    position: float


class VertebraModel:
    """Runs the iterative FCN on single patches."""

    def __init__(
        self,
        network: IterativeFCN,
        settings: VertebraModelSettings,
        device: str | torch.device = "auto",
        entry: ModelEntry | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.network = network.to(self.device).eval()
        self.settings = settings
        self.entry = entry
        self.forward_passes = 0

    @property
    def name(self) -> str:
        return self.entry.name if self.entry else "in-memory model"

    @classmethod
    def from_checkpoint(cls, name_or_path: str | os.PathLike | None = None, device: str = "auto") -> "VertebraModel":
        """Load a bundled model by name (default when None) or a model manifest/weights path."""
        entry = find_model(name_or_path, "vertebrae")
        try:
            settings = VertebraModelSettings.from_dict(entry.manifest["input"])
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"manifest {entry.manifest_path.name} lacks valid input settings: {error}") from None
        network = IterativeFCN(settings.network)
        try:
            network.load_state_dict(load_state_dict(entry))
        except RuntimeError as error:
            raise ModelError(f"weights of {entry.name} do not fit its architecture: {error}") from None
        return cls(network, settings, device, entry)

    @torch.inference_mode()
    def predict(self, image_patch: np.ndarray, memory_patch: np.ndarray) -> PatchPrediction:
        """Segment the next vertebra in one patch (normalised CT and boolean memory, both D x H x W)."""
        inputs = np.stack([image_patch, memory_patch.astype(np.float32)])[np.newaxis]
        output = self.network(torch.from_numpy(inputs).to(self.device))
        self.forward_passes += 1
        return PatchPrediction(
            probability=torch.sigmoid(output.mask_logits)[0, 0].float().cpu().numpy(),
            completeness=float(torch.sigmoid(output.completeness_logit)[0]),
            position=float(output.position[0]),
        )
