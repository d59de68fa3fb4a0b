"""Small changes of a scan that a model should shrug off: a patient lying a few degrees off, a smaller or
larger person, another scanner's contrast. Real scans are few; reading each one several ways tells a model
that gets them right from one that got one reading right by luck (``evaluate_discs.py --perturb``,
``evaluate_vertebrae.py --perturb``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import turned_about_centre
from .volume import Volume

__all__ = ["Perturbation", "POSE_CHANGES", "perturbed_volume", "resampled_scan", "mirrored_scan"]


@dataclass(frozen=True)
class Perturbation:
    """A tilt about the R axis (degrees, positive: leaning back), a tilt about the A axis (degrees, positive:
    leaning to the patient's left; see :func:`~spineseg.geometry.turned_about_centre`), a size factor about the scan's centre, a gamma on MRI intensities (between their 0.5th and 99.5th
    percentiles), a factor on CT values above 0 HU (soft tissue and bone brighter or darker, as between
    tube voltages and reconstruction kernels), the vertebrae's marrow ``marrow_darker_hu`` darker (osteoporosis;
    see :func:`perturbed_volume`) and Gaussian noise of ``noise_sd`` added to every voxel (a lower dose; always
    drawn from the same seed, so that a reading is repeatable)."""

    name: str
    tilt_r_deg: float = 0.0
    tilt_a_deg: float = 0.0
    scale: float = 1.0
    gamma: float = 1.0
    hounsfield_factor: float = 1.0
    noise_sd: float = 0.0
    marrow_darker_hu: float = 0.0


# Osteoporotic marrow: vertebral voxels brighter than MARROW_BOTTOM_HU (air and fat at a vertebra's edge stay)
# and up to MARROW_FULL_LOSS_HU lose the full ``marrow_darker_hu``; the loss tapers to nothing at MARROW_TOP_HU,
# so that the cortex keeps its brightness.
MARROW_BOTTOM_HU = -50.0
MARROW_FULL_LOSS_HU = 200.0
MARROW_TOP_HU = 350.0


# The same scan as it is, leaning 4 degrees each way, and 8 % smaller and larger (both modalities add their own
# intensity changes to these).
POSE_CHANGES = (
    Perturbation("as it is"),
    Perturbation("leaning back 4 deg", tilt_r_deg=4.0), Perturbation("leaning forward 4 deg", tilt_r_deg=-4.0),
    Perturbation("leaning left 4 deg", tilt_a_deg=4.0), Perturbation("leaning right 4 deg", tilt_a_deg=-4.0),
    Perturbation("8 % smaller", scale=0.92), Perturbation("8 % larger", scale=1.08),
)


def perturbed_volume(
    volume: Volume, change: Perturbation, vertebrae: np.ndarray | None = None,
) -> tuple[Volume, np.ndarray]:
    """``volume`` changed by ``change``: its affine turned and resized about its centre (its voxels stay), its
    intensities changed; and the 4 x 4 RAS-to-RAS map by which points in its anatomy moved.

    ``vertebrae`` (the voxels a reference label map gives a vertebra) is needed for ``marrow_darker_hu``: there,
    soft-tissue-to-bone values (above ``MARROW_BOTTOM_HU``) lose it in full up to ``MARROW_FULL_LOSS_HU``, less above,
    nothing from ``MARROW_TOP_HU``: the dark marrow and thin cortex of an osteoporotic spine."""
    moved = turned_about_centre(volume, change.tilt_r_deg, change.tilt_a_deg, change.scale)
    values = volume.array.astype(np.float32)
    if change.marrow_darker_hu:
        if vertebrae is None:
            raise ValueError(f"the reading {change.name!r} darkens the vertebrae's marrow: pass their voxels")
        loss = change.marrow_darker_hu * np.clip((MARROW_TOP_HU - values) / (MARROW_TOP_HU - MARROW_FULL_LOSS_HU),
                                                 0.0, 1.0)
        values = np.where(vertebrae & (values > MARROW_BOTTOM_HU), values - loss.astype(np.float32), values)
    if change.gamma != 1.0:
        low, high = np.percentile(values, [0.5, 99.5])
        if high > low:
            values = (np.clip((values - low) / (high - low), 0.0, 1.0) ** change.gamma) * (high - low) + low
    if change.hounsfield_factor != 1.0:
        values = np.where(values > 0.0, values * np.float32(change.hounsfield_factor), values)
    if change.noise_sd > 0.0:
        values = values + np.random.default_rng(0).normal(0.0, change.noise_sd, values.shape).astype(np.float32)
    return Volume(values, moved @ volume.affine, volume.kind), moved


def _axis_weights(count: int, spacing: float, new_spacing: float) -> np.ndarray:
    """The (new voxels x old voxels) weights that resample one axis of ``count`` voxels: linear interpolation
    between voxel centres onto a finer axis (the nearest voxel beyond the outermost centres), the average over
    each new voxel's extent (every old voxel weighed by the length it shares with it) onto a coarser one. The
    new axis starts at the old one's first face and ends at or before its last."""
    new_count = max(int(np.floor(count * spacing / new_spacing + 1e-6)), 1)
    if new_spacing < spacing:
        centres = ((np.arange(new_count) + 0.5) * new_spacing / spacing - 0.5).clip(0, count - 1)
        low = np.minimum(np.floor(centres).astype(int), count - 2) if count > 1 else np.zeros(new_count, int)
        weights = np.zeros((new_count, count))
        upper = centres - low
        weights[np.arange(new_count), low] = 1.0 - upper
        if count > 1:
            weights[np.arange(new_count), low + 1] += upper
        return weights
    new_faces = np.arange(new_count + 1) * new_spacing
    old_faces = np.arange(count + 1) * spacing
    shared = (np.minimum(new_faces[1:, None], old_faces[None, 1:]) - np.maximum(new_faces[:-1, None], old_faces[None, :-1]))
    return np.clip(shared, 0.0, None) / new_spacing


def resampled_scan(volume: Volume, spacing_mm: tuple[float, float, float]) -> Volume:
    """The same anatomy as a scan of voxel size ``spacing_mm`` (along ``volume``'s own axes) would hold it,
    made from ``volume``: finer axes interpolated linearly, coarser ones averaged over each new voxel's extent
    (what a scanner's wider voxel integrates; no value is lost or invented), in float32. The new grid's first
    face is the old one's; it ends where a whole new voxel still fits."""
    values = volume.array.astype(np.float32)
    for axis, (count, spacing, new_spacing) in enumerate(zip(volume.shape, volume.spacing, spacing_mm)):
        weights = _axis_weights(count, float(spacing), float(new_spacing)).astype(np.float32)
        values = np.moveaxis(np.tensordot(weights, values, axes=([1], [axis])), 0, axis)
    ratio = np.asarray(spacing_mm, float) / volume.spacing
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * ratio
    affine[:3, 3] = volume.ijk_to_ras(ratio / 2.0 - 0.5)[0]
    return Volume(np.ascontiguousarray(values), affine, volume.kind)


def mirrored_scan(volume: Volume) -> Volume:
    """The same image stored with its first axis reversed: a left-handed grid holding the same anatomy."""
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, 3] + volume.affine[:3, 0] * (volume.shape[0] - 1)
    affine[:3, 0] *= -1
    return Volume(volume.array[::-1].copy(), affine, volume.kind)
