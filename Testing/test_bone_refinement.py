"""Snapping a coarse vertebra mask to the bone of the full-resolution CT, and filling the marrow it encloses."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spineseg.metrics import dice
from spineseg.perturbation import resampled_scan
from spineseg.vertebrae.pipeline import (CORTEX_RESOLVED_BLUR_MM, _edge_blur_mm, _fill_enclosed_marrow,
                                         _refine_with_bone)
from spineseg.volume import Volume


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


def dark_marrow_block(shape: tuple[int, int, int], block: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Bone with a 2-voxel 900 HU cortex and 20 HU (fatty) marrow in 40 HU tissue, blurred like a CT."""
    truth = np.zeros(shape, bool)
    truth[block] = True
    marrow = ndimage.binary_erosion(truth, iterations=2, border_value=1)
    hounsfield = np.where(truth, 900.0, 40.0)
    hounsfield[marrow] = 20.0
    return ndimage.gaussian_filter(hounsfield, 1.0), truth


def outline_with_gaps(truth: np.ndarray, level: int) -> np.ndarray:
    """What the network gives for dark marrow: the cortex and its blur (3 voxels), with two windows missing."""
    labels = (truth & ~ndimage.binary_erosion(truth, iterations=3, border_value=1)).astype(np.uint8) * level
    labels[16:24, 16:24, :] = 0  # through both end faces
    labels[:, 16:24, 16:24] = 0  # through both side faces
    return labels


def fill(labels: np.ndarray, hounsfield: np.ndarray, level: int) -> None:
    box = ndimage.find_objects(labels)[level - 1]
    _fill_enclosed_marrow(labels, hounsfield, level, box, (1.0, 1.0, 1.0))


def test_marrow_inside_an_outlined_cortex_joins_the_vertebra():
    hounsfield, truth = dark_marrow_block((40, 40, 40), (slice(10, 30),) * 3)
    labels = outline_with_gaps(truth, 26)
    assert dice(labels == 26, truth) < 0.75
    fill(labels, hounsfield, 26)
    assert dice(labels == 26, truth) > 0.93  # all but the windows in the cortex
    assert not (labels[~truth] == 26).any()


def test_a_vertebra_cut_by_the_scan_keeps_its_marrow():
    """The sacrum runs out of the field of view: its marrow is open at the scan's face, which counts as closed."""
    hounsfield, truth = dark_marrow_block((40, 40, 30), (slice(10, 30), slice(10, 30), slice(0, 20)))
    labels = outline_with_gaps(truth, 26)
    fill(labels, hounsfield, 26)
    assert dice(labels == 26, truth) > 0.93  # all but the windows in the cortex


def test_the_canal_the_discs_and_unlabelled_bone_stay_empty():
    """A ring of bone around a canal open at both ends, a disc enclosed by a bridge of bone between two
    vertebrae, and the marrow of an unlabelled bone (an iliac wing) are no vertebra's marrow."""
    hounsfield = np.full((60, 60, 70), 40.0)
    labels = np.zeros(hounsfield.shape, np.uint8)
    # Vertebra 20 above vertebra 21, their bodies' cortex outlined (marrow 20 HU), a disc between them.
    for level, top in ((20, 60), (21, 30)):
        body = np.zeros(hounsfield.shape, bool)
        body[10:30, 10:30, top - 20:top] = True
        marrow = ndimage.binary_erosion(body, iterations=2)
        hounsfield[body] = 900.0
        hounsfield[marrow] = 20.0
        labels[body & ~marrow] = level
    disc = (slice(10, 30), slice(10, 30), slice(30, 40))
    hounsfield[disc] = 90.0
    bridge = np.zeros(hounsfield.shape, bool)
    bridge[8:32, 8:32, 28:42] = True
    bridge[10:30, 10:30, :] = False
    hounsfield[bridge] = 900.0  # osteophytes closing the disc all round
    # A ring of vertebra 20 around a canal that runs through the whole scan.
    ring = np.zeros(hounsfield.shape, bool)
    ring[35:55, 15:25, 40:60] = True
    ring[40:50, 17:23, :] = False
    hounsfield[ring] = 900.0
    labels[ring] = 20
    # Unlabelled bone: a closed cortex with marrow beside the vertebrae.
    hounsfield[40:56, 40:56, 5:25] = 900.0
    hounsfield[42:54, 42:54, 7:23] = 20.0
    for level in (20, 21):
        fill(labels, hounsfield, level)
    assert (labels[disc] == 0).all()
    assert (labels[40:50, 17:23, 40:60] == 0).all()
    assert (labels[42:54, 42:54, 7:23] == 0).all()
    assert (labels[12:28, 12:28, 42:58] == 20).all() and (labels[12:28, 12:28, 12:28] == 21).all()


def test_a_scan_interpolated_from_thick_slices_reads_too_blurred_for_an_edge_band():
    """The blur is read from the bone's edges, not from the voxel size: a block of solid bone blurred by 0.6 mm
    reads sharp enough for an edge band at 1 mm, the same block blurred by 2 mm or seen through 3 mm slices
    interpolated to 1 mm does not, and without the band a blurred surface keeps its label."""
    truth = np.zeros((42, 42, 42), bool)
    truth[9:33, 9:33, 9:33] = True
    step = np.where(truth, 640.0, 40.0).astype(np.float32)
    sharp, blurred = ndimage.gaussian_filter(step, 0.6), ndimage.gaussian_filter(step, 2.0)
    thick = resampled_scan(resampled_scan(Volume(sharp, np.eye(4)), (3.0,) * 3), (1.0,) * 3).array
    assert thick.shape == truth.shape
    assert _edge_blur_mm(sharp, truth, (1.0,) * 3) <= CORTEX_RESOLVED_BLUR_MM
    assert _edge_blur_mm(blurred, truth, (1.0,) * 3) > CORTEX_RESOLVED_BLUR_MM
    assert _edge_blur_mm(thick, truth, (1.0,) * 3) > _edge_blur_mm(sharp, truth, (1.0,) * 3) + 0.1
    labels = ndimage.binary_dilation(truth, iterations=2).astype(np.uint8) * 7
    probability = np.where(labels > 0, 0.3, 0.0).astype(np.float16)
    box = ndimage.find_objects(labels)[6]
    banded, unbanded = labels.copy(), labels.copy()
    _refine_with_bone(banded, probability, blurred, 7, box, (1.0, 1.0, 1.0))
    _refine_with_bone(unbanded, probability, blurred, 7, box, (1.0, 1.0, 1.0), resolves_cortex=False)
    assert (unbanded == 7).sum() > (banded == 7).sum()
