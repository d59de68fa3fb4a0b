"""Contrast-filled vessels: bright like bone, but not bone.

After intravenous contrast the aorta's lumen (and the heart's chambers, the
venae cavae) reads 150-600 HU, as bright as vertebral marrow or thin cortex,
and the descending aorta lies against the thoracic bodies (front-left) and in
front of the lumbar ones. A threshold for bone takes it in. Physics tells the
two apart:

* a lumen is blood mixed with contrast: nearly constant HU across a window of
  several millimetres (only noise); bone is cortex and trabeculae, and every
  window that holds a cortex varies by hundreds of HU;
* a lumen has no shell brighter than itself (its wall is soft tissue, with at
  most a spot of calcified plaque); a body's marrow is enclosed by a cortex
  brighter than the marrow;
* a vessel is a tube running a long way; marrow of even texture stops at each
  disc, after one body's height.

:func:`contrast_lumen` finds the smooth, bright cores, keeps those that are long
and have no brighter shell, and adds their blurred edge (the voxels close to the
core and not brighter than the lumen).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["contrast_lumen"]

# A lumen's core: its window's mean lies in this range (contrast blood; cortical bone is brighter) and its HU
# vary by less than SMOOTH_SD_HU (scanner noise; trabecular bone and every cortex edge vary more).
LUMEN_HU = (150.0, 800.0)
SMOOTH_SD_HU = 40.0
# The window is this wide across each axis (rounded to an odd number of voxels): a few mm, well inside an aorta
# (20-35 mm across), wider than trabeculae.
WINDOW_MM = 7.0
# A vessel's core runs at least this far head to foot: more than a vertebral body's height (marrow stops at
# the disc, whose 50-130 HU are no lumen).
MIN_LENGTH_MM = 40.0
# The shell: voxels within SHELL_MM outside the core. A body's marrow is enclosed by cortex brighter than it; a
# lumen is not, except where it touches a bone or holds a spot of plaque: at most MAX_BRIGHT_SHELL_SHARE of its
# shell is brighter than the core's median by SHELL_BRIGHTER_HU.
SHELL_MM = 5.0
SHELL_BRIGHTER_HU = 100.0
MAX_BRIGHT_SHELL_SHARE = 0.1
# The lumen's edge: voxels this close to the core (half the window, the core's distance from the edge, plus the
# scanner's blur) and not brighter than the lumen's own brightest voxels by SHELL_BRIGHTER_HU (cortex touching
# the vessel stays bone).
EDGE_MM = 5.0


def _local_mean_and_sd(hounsfield: np.ndarray, spacing_mm: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the HU in a ``WINDOW_MM`` box around every voxel, at least three voxels
    along each axis: a window one thick slice deep sees no variation along that axis, and the marrow of a
    smooth thick-slice scan then reads as smooth as blood."""
    size = [max(3, int(round(WINDOW_MM / s)) | 1) for s in spacing_mm]
    # Centred and clipped so float32 keeps the variance of soft tissue and contrast exact enough.
    values = np.clip(hounsfield, -1024.0, 2000.0).astype(np.float32) - 300.0
    mean = ndimage.uniform_filter(values, size)
    square = ndimage.uniform_filter(values * values, size)
    return mean + 300.0, np.sqrt(np.maximum(square - mean * mean, 0.0))


def contrast_lumen(
    hounsfield: np.ndarray, spacing_mm: tuple[float, float, float], superior_axis: int,
) -> np.ndarray:
    """The voxels of contrast-filled vessels and heart chambers: long, smooth, bright, with no brighter shell.

    Args:
        hounsfield: a CT (or a box of one) in Hounsfield units.
        spacing_mm: voxel size along the three axes.
        superior_axis: the array axis closest to head-foot.

    Returns:
        A mask of the lumens, with their blurred edge; empty where the CT has no contrast vessel.
    """
    mean, sd = _local_mean_and_sd(hounsfield, spacing_mm)
    low, high = LUMEN_HU
    core = (mean >= low) & (mean <= high) & (sd < SMOOTH_SD_HU) & (hounsfield >= low)
    pieces, count = ndimage.label(core)
    lumen = np.zeros(hounsfield.shape, bool)
    if not count:
        return lumen
    pad = [int(np.ceil(max(SHELL_MM, EDGE_MM) / s)) + 1 for s in spacing_mm]
    for index, box in enumerate(ndimage.find_objects(pieces), start=1):
        if box is None:
            continue
        length = (box[superior_axis].stop - box[superior_axis].start) * spacing_mm[superior_axis]
        if length < MIN_LENGTH_MM:
            continue
        around = tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(box, pad, hounsfield.shape))
        piece = pieces[around] == index
        values = hounsfield[around]
        distance = ndimage.distance_transform_edt(~piece, sampling=spacing_mm)
        inside = values[piece]
        shell = values[(distance > 0) & (distance <= SHELL_MM)]
        if shell.size and np.mean(shell > np.median(inside) + SHELL_BRIGHTER_HU) > MAX_BRIGHT_SHELL_SHARE:
            continue
        brightest = np.percentile(inside, 99) + SHELL_BRIGHTER_HU
        lumen[around] |= piece | ((distance <= EDGE_MM) & (values <= brightest))
    return lumen
