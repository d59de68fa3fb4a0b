"""The disc model: the attention hourglass plus the settings it was trained with.

Mirrors :mod:`spineseg.networks.vertebra_model`: :func:`spineseg.model_store.load_model`
builds it from a manifest and checked weights; the plain constructor takes a
network for tests and training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .hourglass import AttentionHourglassNet, HourglassConfig
from .loaded import LoadedModel

__all__ = ["DiscModelSettings", "DiscModel"]


# Settings a manifest may hold; outside, it is refused as broken instead of ending in "out of memory".
INPUT_SIZE_RANGE = (16, 2048)  # slab pixels per side
MAX_SLAB_THICKNESS_MM = 100.0  # thicker than a spine


@dataclass(frozen=True)
class DiscModelSettings:
    """Input geometry of a disc model: square slab size (pixels), heatmap stride, slab thickness (mm)."""

    input_size: int = 256
    output_stride: int = 4
    slab_thickness_mm: float = 6.0
    network: HourglassConfig = HourglassConfig()

    def __post_init__(self) -> None:
        if not INPUT_SIZE_RANGE[0] <= self.input_size <= INPUT_SIZE_RANGE[1] or \
                self.input_size % self.network.divisor:
            raise ValueError(f"input_size must be a multiple of {self.network.divisor} from {INPUT_SIZE_RANGE[0]} "
                             f"to {INPUT_SIZE_RANGE[1]}, got {self.input_size}")
        if not 0 < self.output_stride <= self.input_size:
            raise ValueError(f"output_stride must be 1 to input_size, got {self.output_stride}")
        if not 0 < self.slab_thickness_mm <= MAX_SLAB_THICKNESS_MM:
            raise ValueError(f"slab_thickness_mm must be above 0 and at most {MAX_SLAB_THICKNESS_MM}, "
                             f"got {self.slab_thickness_mm}")

    def to_manifest(self) -> dict:
        """The manifest keys that rebuild the model: the network (``architecture``, its class named by ``type``)
        and the input geometry (``input``); the layout both tasks' manifests share."""
        return {
            "architecture": {"type": AttentionHourglassNet.__name__, **self.network.to_dict()},
            "input": {"input_size": [self.input_size, self.input_size], "output_stride": self.output_stride,
                      "slab_thickness_mm": self.slab_thickness_mm},
        }

    @classmethod
    def from_manifest(cls, manifest: dict) -> "DiscModelSettings":
        """Read the settings from a manifest (other keys are ignored)."""
        values = manifest["input"]
        size = values["input_size"]
        return cls(
            input_size=int(size[0] if isinstance(size, (list, tuple)) else size),
            output_stride=int(values.get("output_stride", cls.output_stride)),
            slab_thickness_mm=float(values.get("slab_thickness_mm", cls.slab_thickness_mm)),
            network=HourglassConfig(**{k: v for k, v in manifest["architecture"].items() if k != "type"}),
        )


class DiscModel(LoadedModel):
    """Runs the attention hourglass on mid-sagittal slabs."""

    @torch.inference_mode()
    def heatmaps(self, image: np.ndarray) -> np.ndarray:
        """(channels, h, w) heatmaps of the last stack for one (size, size) slab."""
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(self.device)
        return self.network(tensor)[-1][0].float().cpu().numpy()
