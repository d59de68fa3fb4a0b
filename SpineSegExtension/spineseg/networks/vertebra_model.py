"""The vertebra model: the network plus the settings it was trained with.

Load once, predict many: :func:`spineseg.model_store.load_model` reads a
bundled or user model; the plain constructor takes a network for tests and
training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .loaded import LoadedModel
from .unet3d import IterativeFCN, IterativeFCNConfig

__all__ = ["VertebraModelSettings", "PatchPrediction", "VertebraModel"]


# Settings a manifest may hold: finer than any CT voxel or coarser than a vertebra is no model's grid, and a
# larger patch would not fit in memory (512³ floats are 0.5 GB per channel); outside, a manifest is refused
# as broken instead of ending in "out of memory".
SPACING_RANGE_MM = (0.25, 20.0)
PATCH_SIZE_RANGE = (8, 512)


@dataclass(frozen=True)
class VertebraModelSettings:
    """Input geometry of a model: isotropic spacing (mm) and cube patch size (voxels)."""

    spacing_mm: float = 3.0
    patch_size: int = 40
    network: IterativeFCNConfig = IterativeFCNConfig(filters=16)

    def __post_init__(self) -> None:
        if not SPACING_RANGE_MM[0] <= self.spacing_mm <= SPACING_RANGE_MM[1]:
            raise ValueError(f"spacing_mm must be {SPACING_RANGE_MM[0]} to {SPACING_RANGE_MM[1]} mm, "
                             f"got {self.spacing_mm}")
        if not PATCH_SIZE_RANGE[0] <= self.patch_size <= PATCH_SIZE_RANGE[1]:
            raise ValueError(f"patch_size must be {PATCH_SIZE_RANGE[0]} to {PATCH_SIZE_RANGE[1]} voxels, "
                             f"got {self.patch_size}")
        if self.patch_size % self.network.divisor:
            raise ValueError(f"patch_size must be a multiple of {self.network.divisor}, got {self.patch_size}")

    def to_manifest(self) -> dict:
        """The manifest keys that rebuild the model: the network (``architecture``, its class named by ``type``)
        and the input geometry (``input``); the layout both tasks' manifests share."""
        return {"architecture": {"type": IterativeFCN.__name__, **self.network.to_dict()},
                "input": {"spacing_mm": self.spacing_mm, "patch_size": self.patch_size}}

    @classmethod
    def from_manifest(cls, manifest: dict) -> "VertebraModelSettings":
        """Read the settings from a manifest (other keys are ignored)."""
        values = manifest["input"]
        return cls(
            spacing_mm=float(values["spacing_mm"]),
            patch_size=int(values["patch_size"]),
            network=IterativeFCNConfig(**{k: v for k, v in manifest["architecture"].items() if k != "type"}),
        )


@dataclass
class PatchPrediction:
    """Network output for one patch: mask probability (D x H x W), completeness probability, position."""

    probability: np.ndarray
    completeness: float
    position: float


class VertebraModel(LoadedModel):
    """Runs the iterative FCN on single patches, counting its forward passes (benchmarks report them)."""

    def __init__(self, network: IterativeFCN, settings: VertebraModelSettings, device: str | torch.device = "auto",
                 entry: Any = None) -> None:
        super().__init__(network, settings, device, entry)
        self.forward_passes = 0

    def predict(self, image_patch: np.ndarray, memory_patch: np.ndarray) -> PatchPrediction:
        """Segment the next vertebra in one patch (normalised CT and boolean memory, both D x H x W)."""
        return self.predict_batch(image_patch[np.newaxis], memory_patch[np.newaxis])[0]

    @torch.inference_mode()
    def predict_batch(self, image_patches: np.ndarray, memory_patches: np.ndarray) -> list[PatchPrediction]:
        """:meth:`predict` for N patches at once (N x D x H x W each); one forward pass counted per patch.

        Instance norm keeps each patch's result independent of the others in the batch."""
        inputs = np.stack([image_patches.astype(np.float32), memory_patches.astype(np.float32)], axis=1)
        # On a GPU, float16 where it is safe (autocast keeps norms and sums in float32); the CPU path is unchanged.
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            output = self.network(torch.from_numpy(inputs).to(self.device))
        self.forward_passes += len(inputs)
        probability = torch.sigmoid(output.mask_logits.float())[:, 0].cpu().numpy()
        completeness = torch.sigmoid(output.completeness_logit.float()).reshape(-1).tolist()
        position = output.position.float().reshape(-1).tolist()
        return [PatchPrediction(probability[i], completeness[i], position[i]) for i in range(len(inputs))]
