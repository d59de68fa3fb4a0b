"""Snapping a coarse vertebra mask to the bone of the full-resolution CT."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spineseg.metrics import dice
from spineseg.vertebrae.pipeline import _refine_with_bone


def blurred_bone_block(cortex_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """A 20-voxel cube of bone (2-voxel cortex, 250 HU marrow) in 40 HU tissue, blurred like a CT."""
    truth = np.zeros((40, 40, 40), bool)
    truth[10:30, 10:30, 10:30] = True
    hounsfield = np.full(truth.shape, 40.0)
    hounsfield[truth] = cortex_hu
    hounsfield[12:28, 12:28, 12:28] = 250.0
    return ndimage.gaussian_filter(hounsfield, 1.0), truth


def test_a_generous_mask_snaps_to_the_edge_of_blurred_bone():
    for cortex_hu in (700.0, 1400.0):  # a phantom-like and a real-CT-like cortex
        hounsfield, truth = blurred_bone_block(cortex_hu)
        # Like the network's upsampled output: sure a voxel beyond the bone, unsure two voxels further.
        labels = ndimage.binary_dilation(truth, iterations=3).astype(np.uint8) * 7
        probability = np.where(labels > 0, 0.3, 0.0)
        probability[ndimage.binary_dilation(truth)] = 0.6
        box = ndimage.find_objects(labels)[6]
        _refine_with_bone(labels, probability.astype(np.float16), hounsfield, 7, box, (1.0, 1.0, 1.0))
        refined = labels == 7
        assert dice(refined, truth) > 0.97, cortex_hu
        assert (truth & ~refined).sum() < 0.01 * truth.sum()  # almost nothing of the bone lost
        assert not (refined & ~ndimage.binary_dilation(truth)).any()  # nothing beyond one voxel outside


def test_dark_marrow_behind_an_open_cortex_is_kept():
    """Osteoporotic or fatty marrow (60 HU) reads like soft tissue; where the cortex is open (here one endplate
    is missing) hole filling cannot reach it, so the network's confident interior must keep it."""
    truth = np.zeros((40, 40, 40), bool)
    truth[10:30, 10:30, 10:30] = True
    hounsfield = np.full(truth.shape, 40.0)
    hounsfield[truth] = 900.0
    hounsfield[12:28, 12:28, 12:30] = 60.0  # marrow reaching the open top face
    hounsfield = ndimage.gaussian_filter(hounsfield, 1.0)
    labels = truth.astype(np.uint8) * 7
    probability = np.where(truth, 0.9, 0.0).astype(np.float16)
    box = ndimage.find_objects(labels)[6]
    _refine_with_bone(labels, probability, hounsfield, 7, box, (1.0, 1.0, 1.0))
    assert dice(labels == 7, truth) > 0.95
