"""The real CTs that judge a vertebra model: validation and reporting only, never training.

The folder is the project's ``../shared/data/real`` (beside the checkout; see
its README). Its reference labels come from TotalSegmentator, so scores are
agreement with another model, not with a manual ground truth. Each scan is
scored only on the levels its reference holds whole:

* ``ct_totalseg_example/example_ct.nii.gz`` (3 mm, T11 cut to sacrum): T12-L5;
* ``ct_totalseg_example/dicom`` (1 x 1 x 2 mm, 40 mm tall): T11 and T12.

The score of a scan is its mean level-matched Dice over those levels (a
vertebra named wrong scores 0), what a user of the whole pipeline gets.
:func:`perturbed_ct` reads a scan again tilted, resized or with other
Hounsfield values (``CT_PERTURBATIONS``), to tell a robust score from a lucky one, and with the noise of a
lower dose (``CT_NOISE``), and with the dark marrow of an osteoporotic spine (``CT_OSTEOPOROSIS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import Grid, resample_to
from ..io import read_volume
from ..metrics import score_vertebrae
from ..perturbation import POSE_CHANGES, Perturbation, perturbed_volume
from ..volume import Volume, VolumeKind

__all__ = ["TOTALSEG_TO_VERSE", "RealCT", "read_real_cts", "score_real_ct", "CT_PERTURBATIONS", "CT_NOISE",
           "CT_OSTEOPOROSIS", "perturbed_ct"]

# TotalSegmentator v2 label ids -> VerSe numbers (S1 joins the sacrum).
TOTALSEG_TO_VERSE = {25: 26, 26: 26, 27: 24, 28: 23, 29: 22, 30: 21, 31: 20, 32: 19, 33: 18}


@dataclass(frozen=True)
class RealCT:
    """A real CT, its reference label map in VerSe numbers, and the levels it is scored on."""

    name: str
    image: Volume
    reference: np.ndarray
    scored_levels: tuple[int, ...]


def _reference_on(image: Volume, path: Path) -> np.ndarray:
    """The TotalSegmentator label map at ``path`` on ``image``'s grid, in VerSe numbers.

    Placed by the two files' geometry, not voxel by voxel: the DICOM series'
    label map stores its rows in the opposite order from the series.
    """
    labels = resample_to(read_volume(path, VolumeKind.LABEL), Grid(image.shape, image.affine)).array
    verse = np.zeros(labels.shape, np.uint8)
    for source, target in TOTALSEG_TO_VERSE.items():
        verse[labels == source] = target
    return verse


def read_real_cts(folder: str | Path) -> list[RealCT]:
    """The real CTs of ``folder`` (the NIfTI scan and the DICOM series of ``ct_totalseg_example``).

    Raises:
        InputError: the folder does not exist or holds neither scan.
    """
    folder = Path(folder)
    example = folder / "ct_totalseg_example"
    if not example.is_dir():
        raise InputError(f"no real CTs in {folder}: expected {example} (the project's ../shared/data/real); "
                         "set validation.real_folder to that folder, or to \"\" to validate on phantoms only")
    scans = []
    if (example / "example_ct.nii.gz").exists():
        image = read_volume(example / "example_ct.nii.gz")
        reference = _reference_on(image, example / "example_seg_fast_force_split.nii.gz")
        scans.append(RealCT("real CT 3 mm (T11-sacrum)", image, reference, (19, 20, 21, 22, 23, 24)))
    if (example / "dicom").is_dir():
        image = read_volume(example / "dicom")
        reference = _reference_on(image, example / "example_seg_dicom.nii.gz")
        scans.append(RealCT("real CT DICOM 2 mm (T11-T12)", image, reference, (18, 19)))
    if not scans:
        raise InputError(f"{example} holds neither example_ct.nii.gz nor a dicom folder")
    return scans


def score_real_ct(prediction: np.ndarray, scan: RealCT) -> dict[str, float]:
    """Mean level-matched Dice and the share of scored levels named right (matched to the right label)."""
    scores = score_vertebrae(prediction, scan.reference, scan.image.spacing)
    scored = [s for s in scores.vertebrae if s.level in scan.scored_levels]
    return {"dice": float(np.mean([s.dice for s in scored])),
            "named": float(np.mean([s.identified for s in scored])),
            "matched_dice": float(np.mean([s.matched_dice for s in scored]))}


# Nine readings of a CT: as it is, leaning 4 degrees each way, 8 % smaller and larger, soft tissue and bone
# 15 % darker and brighter.
CT_PERTURBATIONS = (*POSE_CHANGES, Perturbation("HU x 0.85", hounsfield_factor=0.85),
                    Perturbation("HU x 1.15", hounsfield_factor=1.15))
# The same CT with Gaussian noise added to its voxels (thin-slice low-dose scans read 30-60 HU of noise).
CT_NOISE = (Perturbation("noise SD 30 HU", noise_sd=30.0), Perturbation("noise SD 60 HU", noise_sd=60.0))
# The same CT as an osteoporotic spine shows it: the vertebrae's marrow 100 HU darker (real osteoporotic
# lumbar marrow reads 0-100 HU), alone and with the noise of a low dose.
CT_OSTEOPOROSIS = (Perturbation("marrow 100 HU darker", marrow_darker_hu=100.0),
                   Perturbation("marrow 100 HU darker, noise SD 60 HU", marrow_darker_hu=100.0, noise_sd=60.0))


def perturbed_ct(scan: RealCT, change: Perturbation) -> RealCT:
    """``scan`` tilted and resized about its centre (its affine changes, its voxels and so its reference labels
    do not), its values above 0 HU scaled, its vertebrae's marrow darkened and noise added (see
    :class:`~spineseg.perturbation.Perturbation`)."""
    image, _ = perturbed_volume(scan.image, change, scan.reference > 0)
    return RealCT(f"{scan.name}, {change.name}", image, scan.reference, scan.scored_levels)
