"""A CT in which the network finds no vertebra: empty outputs that say so, never a crash or a silent success."""

from __future__ import annotations

import numpy as np

from spineseg.networks.unet3d import IterativeFCN, IterativeFCNConfig
from spineseg.networks.vertebra_model import PatchPrediction, VertebraModel, VertebraModelSettings
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.vertebrae.pipeline import NO_VERTEBRA_WARNING, segment_vertebrae


class SeesNothingModel(VertebraModel):
    """A stand-in for a network that fails on a scan: it outlines nothing anywhere."""

    def __init__(self) -> None:
        settings = VertebraModelSettings(spacing_mm=3.0, patch_size=24, network=IterativeFCNConfig(filters=1))
        super().__init__(IterativeFCN(settings.network), settings, "cpu")

    def predict(self, image_patch: np.ndarray, memory_patch: np.ndarray) -> PatchPrediction:
        return PatchPrediction(np.zeros(image_patch.shape, np.float32), 0.0, 21.0)


def test_a_scan_where_nothing_is_found_gives_an_empty_label_map_and_a_warning():
    phantom = make_ct_phantom([21, 22, 23], spacing=2.0, seed=5)
    result = segment_vertebrae(phantom.image, SeesNothingModel())
    assert result.vertebrae == [] and not result.label_map.array.any()
    assert result.label_map.shape == phantom.image.shape
    assert NO_VERTEBRA_WARNING in result.warnings
