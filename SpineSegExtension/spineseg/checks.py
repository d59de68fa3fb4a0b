"""Can this image be used for this task? One place for refusals (InputError) and warnings.

Both task functions (:func:`spineseg.vertebrae.pipeline.segment_vertebrae`,
:func:`spineseg.discs.pipeline.label_discs`) call :func:`check_input` first,
so the CLI, the batch script and Slicer refuse the same images with the same
one-line reason, and write the same warnings into their JSON.

What a task demands is its :class:`~spineseg.tasks.InputProfile`. Refused: an image too small or too
narrow for the task's anatomy (for vertebrae a narrow image is a wrong voxel size); for a CT task,
intensities that cannot be Hounsfield units, including an MRI or a CT without its rescale (no fat or air
below -50 HU); for an MRI task, a CT (fat and air in Hounsfield units). ``force_modality`` turns the
modality refusals into warnings. Warned about: thick or (where the profile says) strongly anisotropic
voxels. Repaired (with a warning): a few CT voxels no scanner produces (:func:`repair_impossible_hounsfield`).
"""

from __future__ import annotations

import logging

import numpy as np

from . import tasks
from .errors import InputError
from .tasks import InputProfile
from .volume import Volume

__all__ = ["check_input", "repair_impossible_hounsfield", "fat_or_air_share"]

logger = logging.getLogger(__name__)

# Intensity statistics are read from at most about this many voxels (every 4th along each axis beyond),
# enough for stable percentiles and cheap on large scans.
INTENSITY_SAMPLE_VOXELS = 8_000_000
INTENSITY_SAMPLE_STEP = 4
# Robust extremes and median (percentiles): single hot or dead voxels must not decide.
INTENSITY_PERCENTILES = (0.5, 50.0, 99.5)
# Values no CT in Hounsfield units reaches: below the padding scanners use (down to -3024 HU) and above
# dense metal (about 30,000 HU on extended-scale scanners).
MIN_PLAUSIBLE_HU, MAX_PLAUSIBLE_HU = -4000.0, 40000.0
# A CT's median voxel is air, fat, soft tissue or bone: between these.
MEDIAN_HU_RANGE = (-1500.0, 3000.0)
# A robust spread (HU) below this holds no anatomy.
MIN_INTENSITY_SPREAD_HU = 50.0
# Fat (-150 to -50 HU) and air (-1000 HU) lie below this; MRI magnitudes and uncalibrated CT (0-255,
# 0-4095) never do.
FAT_HU = -50.0
# A CT of the spine has at least this share of voxels of fat or air; an MRI has none (the shares measured on
# the real scans and the phantom: docs/bad_input.md).
MIN_FAT_OR_AIR_SHARE = 0.01

# Voxels thicker than this blur end plates and discs along that axis (each task's profile may also limit
# how elongated a voxel may be: spineseg.tasks.InputProfile.max_anisotropy).
MAX_SLICE_MM = 5.0


def check_input(volume: Volume, task: "tasks.TaskSpec | str", force_modality: bool = False) -> list[str]:
    """Refuse an image the task cannot use; return warnings (also logged) about doubtful ones.

    Args:
        volume: the input image.
        task: the task (its name or spec), whose :class:`~spineseg.tasks.InputProfile` says what it needs.
        force_modality: run even if the intensities say the image is of the other modality.

    Raises:
        InputError: the image is too small, is not of the task's modality (unless forced), or for
            a CT task its values cannot be Hounsfield units.
    """
    profile = tasks.get(task).input_checks
    if sum(n > 1 for n in volume.shape) < 3:
        raise InputError(f"the image is 2D (size {volume.shape} voxels); SpineSeg needs a 3D image")
    extent = volume.spacing * np.array(volume.shape)
    shown = np.round(extent, 1).tolist()
    if extent.min() < profile.min_extent_mm:
        raise InputError(profile.extent_refusal.format(extent=shown, minimum=profile.min_extent_mm))
    if np.sort(extent)[-2] < profile.min_cross_section_mm:
        raise InputError(profile.cross_section_refusal.format(extent=shown, minimum=profile.min_cross_section_mm))
    warnings = _modality_warnings(volume, profile, force_modality) + _spacing_warnings(volume, profile)
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def repair_impossible_hounsfield(volume: Volume) -> tuple[Volume, list[str]]:
    """Replace CT voxels no scanner produces (hot or dead pixels) by the median of their valid neighbours.

    A few voxels at +-1e6 are a rounding of nothing: resampling spreads them
    into bright or dark blobs, and 0.05 % of them moved the real CT's names one
    level and halved its volumes. Replaced by the median of their 3 x 3 x 3
    neighbourhood (other such voxels left out), the names stay and volumes move by
    at most 2.5 % (measured on that CT, docs/bad_input.md). Only a few are repaired: an image where
    more than ``INTENSITY_PERCENTILES``' tails lie there is refused by
    :func:`check_input` as not in Hounsfield units.

    Returns:
        The volume (a repaired copy, or the same object when nothing was wrong) and a warning naming the count.
    """
    array = volume.array
    impossible = (array < MIN_PLAUSIBLE_HU) | (array > MAX_PLAUSIBLE_HU)
    count = int(np.count_nonzero(impossible))
    if count == 0 or count > array.size * INTENSITY_PERCENTILES[0] / 100:
        return volume, []
    where = np.argwhere(impossible)
    offsets = np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    around = np.clip(where[:, None, :] + offsets[None], 0, np.array(array.shape) - 1)
    index = (around[..., 0], around[..., 1], around[..., 2])
    values = np.where(impossible[index], np.nan, array[index].astype(np.float64))
    alone = np.all(np.isnan(values), axis=1)  # every neighbour impossible too: the image's median instead
    values[alone, 0] = float(np.median(array[~impossible]))
    medians = np.nanmedian(values, axis=1)
    repaired = array.copy()
    repaired[impossible] = np.round(medians) if array.dtype.kind in "iu" else medians
    warning = (f"{count} voxel(s) ({100 * count / array.size:.3f} %) hold values no CT scanner produces (below "
               f"{MIN_PLAUSIBLE_HU:.0f} or above {MAX_PLAUSIBLE_HU:.0f} HU: hot or dead pixels); each was replaced "
               "by the median of its neighbours")
    logger.warning("%s", warning)
    return volume.with_array(repaired), [warning]


def _intensity_sample(volume: Volume) -> np.ndarray:
    step = INTENSITY_SAMPLE_STEP
    return volume.array[::step, ::step, ::step] if volume.array.size > INTENSITY_SAMPLE_VOXELS else volume.array


def fat_or_air_share(volume: Volume) -> float:
    """The share of voxels below ``FAT_HU``: large in any CT in Hounsfield units, zero in an MRI."""
    return float(np.mean(_intensity_sample(volume) < FAT_HU))


def _modality_warnings(volume: Volume, profile: InputProfile, force: bool) -> list[str]:
    """Refuse (or, when forced, warn about) an image of the other modality; for a CT task, then refuse values
    that cannot be Hounsfield units at all."""
    share = fat_or_air_share(volume)
    warnings = []
    if profile.modality == "MR" and share >= MIN_FAT_OR_AIR_SHARE:
        warnings.append(f"this looks like a CT, not an MRI: {100 * share:.0f} % of voxels are below {FAT_HU:.0f} "
                        "(fat or air in Hounsfield units)")
    elif profile.modality == "CT" and share < MIN_FAT_OR_AIR_SHARE:
        warnings.append(f"this does not look like a CT in Hounsfield units: only {100 * share:.1f} % of voxels are "
                        f"below {FAT_HU:.0f} (a CT shows fat and air there); an MRI, or a CT without its rescale "
                        "slope and intercept")
    if warnings and not force:
        raise InputError(f"{warnings[0]}; pass --force-modality to run anyway")
    if profile.modality == "CT":
        _check_hounsfield_range(volume)
    return [f"{warning}; run anyway (--force-modality)" for warning in warnings]


def _check_hounsfield_range(volume: Volume) -> None:
    """Refuse values no CT in Hounsfield units holds, and images without anatomy."""
    low, median, high = np.percentile(_intensity_sample(volume), INTENSITY_PERCENTILES)
    if low < MIN_PLAUSIBLE_HU or high > MAX_PLAUSIBLE_HU or not MEDIAN_HU_RANGE[0] <= median <= MEDIAN_HU_RANGE[1]:
        raise InputError(
            f"intensities ({low:.0f} to {high:.0f}, median {median:.0f}) are far outside CT's Hounsfield range; "
            "give a CT in Hounsfield units (rescale slope and intercept applied)"
        )
    if high - low < MIN_INTENSITY_SPREAD_HU:
        raise InputError(f"the image is nearly uniform ({low:.1f} to {high:.1f}); it holds no anatomy to segment")


def _spacing_warnings(volume: Volume, profile: InputProfile) -> list[str]:
    """Warn about voxels too thick or too elongated for reliable boundaries and names."""
    spacing = volume.spacing
    thickest, finest = float(spacing.max()), float(spacing.min())
    shown = " x ".join(f"{s:.2f}" for s in spacing)
    if thickest > MAX_SLICE_MM:
        return [f"voxels of {shown} mm are thicker than {MAX_SLICE_MM:.0f} mm: boundaries and names may be wrong"]
    if profile.max_anisotropy and thickest > profile.max_anisotropy * finest:
        return [f"voxels of {shown} mm are more than {profile.max_anisotropy:.0f} times longer than wide: "
                "boundaries and names may be wrong"]
    return []
