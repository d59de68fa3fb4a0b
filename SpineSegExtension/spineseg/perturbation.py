"""Small changes of a scan that a model should shrug off: a patient lying a few degrees off, a smaller or
larger person, another scanner's contrast. Real scans are few; reading each one several ways tells a model
that gets them right from one that got one reading right by luck (``evaluate_discs.py --perturb``,
``evaluate_vertebrae.py --perturb``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import turned_about_centre
from .volume import Volume

__all__ = ["Perturbation", "POSE_CHANGES", "perturbed_volume"]


@dataclass(frozen=True)
class Perturbation:
    """A tilt about the R axis (degrees, positive: leaning back), a tilt about the A axis (degrees, positive:
    leaning to the patient's left; see :func:`~spineseg.geometry.turned_about_centre`), a size factor about the scan's centre, a gamma on MRI intensities (between their 0.5th and 99.5th
    percentiles) and a factor on CT values above 0 HU (soft tissue and bone brighter or darker, as between
    tube voltages and reconstruction kernels)."""

    name: str
    tilt_r_deg: float = 0.0
    tilt_a_deg: float = 0.0
    scale: float = 1.0
    gamma: float = 1.0
    hounsfield_factor: float = 1.0


# The same scan as it is, leaning 4 degrees each way, and 8 % smaller and larger (both modalities add their own
# intensity changes to these).
POSE_CHANGES = (
    Perturbation("as it is"),
    Perturbation("leaning back 4 deg", tilt_r_deg=4.0), Perturbation("leaning forward 4 deg", tilt_r_deg=-4.0),
    Perturbation("leaning left 4 deg", tilt_a_deg=4.0), Perturbation("leaning right 4 deg", tilt_a_deg=-4.0),
    Perturbation("8 % smaller", scale=0.92), Perturbation("8 % larger", scale=1.08),
)


def perturbed_volume(volume: Volume, change: Perturbation) -> tuple[Volume, np.ndarray]:
    """``volume`` changed by ``change``: its affine turned and resized about its centre (its voxels stay), its
    intensities changed; and the 4 x 4 RAS-to-RAS map by which points in its anatomy moved."""
    moved = turned_about_centre(volume, change.tilt_r_deg, change.tilt_a_deg, change.scale)
    values = volume.array.astype(np.float32)
    if change.gamma != 1.0:
        low, high = np.percentile(values, [0.5, 99.5])
        if high > low:
            values = (np.clip((values - low) / (high - low), 0.0, 1.0) ** change.gamma) * (high - low) + low
    if change.hounsfield_factor != 1.0:
        values = np.where(values > 0.0, values * np.float32(change.hounsfield_factor), values)
    return Volume(values, moved @ volume.affine, volume.kind), moved
