"""The real MRIs that judge a disc model (``../shared/data/real``): their reference discs and how they are scored.

None of them has manual disc centres in 3D, so every scan is scored head to foot only (the S coordinate), and
a disc counts as *named right* when a predicted disc with the reference's number lies within the scan's
tolerance of it:

* ``pam50_t2``: PAM50 T2 template, 18 discs C1/C2 ... T11/T12 on the cord centre line; 5 mm;
* ``sct_cervical_t2``: SCT cervical T2, C3, C4 and C5 body centres marked; the C3/C4 and C4/C5 discs are
  taken half-way between them; 3 mm;
* ``sct_thoracolumbar_t2``: SCT thoraco-lumbar T2, the posterior tip of the T9/T10 disc; 5 mm;
* ``lumbar_ivdNN`` (4 exams): sagittal T2 lumbar MRIs, the five hand-drawn discs L1/L2 ... L5/S1 at their
  centroids; 5 mm;
* ``lumbar_vb2NN`` (14 exams): sagittal T2 lower-spine MRIs (8-bit), discs T11/T12 ... L4/L5 half-way between
  the hand-drawn bodies T11 ... L5 (within about 2 mm of the disc centre); 5 mm.

The 18 lumbar exams (104 discs) are scored together as well (:func:`lumbar_summary`): discs named right and
exams entirely right, the figures of issue 29's done-when.

These scans are for validation only: never train on them.

Three scans are few, and one reading of each can be luck: :func:`perturbed_scan` tilts, resizes or changes
the contrast of a scan a little (``PERTURBATIONS``: a patient lying 4 degrees off, a person 8 % smaller or
larger, another scanner's contrast), moving its reference discs with it, so that a model can be judged on
how often it gets a scan right, not once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..io import read_volume
from ..perturbation import POSE_CHANGES, Perturbation, perturbed_volume
from ..results import DiscRecord
from ..volume import Volume, VolumeKind

__all__ = ["RealScan", "RealScore", "load_real_scans", "score_real_scan", "resolve_real_folder", "REAL_SCAN_NAMES",
           "LUMBAR_FOLDERS", "Perturbation", "PERTURBATIONS", "perturbed_scan", "lumbar_summary", "is_lumbar_exam"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealScan:
    """One real MRI with its reference discs (number -> RAS mm) and its head-to-foot tolerance."""

    name: str
    image: Volume
    reference: dict[int, np.ndarray]
    tolerance_mm: float


@dataclass(frozen=True)
class RealScore:
    """How many reference discs of one scan came out named right within the tolerance, and the errors."""

    name: str
    named_right: int
    reference: int
    predicted: list[int]
    errors_mm: dict[int, float]  # reference number -> head-to-foot distance to the disc predicted with that number

    @property
    def fraction(self) -> float:
        return self.named_right / self.reference if self.reference else 0.0

    def to_dict(self) -> dict:
        return {"named_right": self.named_right, "reference": self.reference, "fraction": round(self.fraction, 4),
                "predicted_numbers": self.predicted,
                "head_to_foot_error_mm": {str(n): round(e, 2) for n, e in self.errors_mm.items()}}


def _label_points(path: Path) -> dict[int, np.ndarray]:
    """Number -> RAS centre of the voxels carrying it."""
    labels = read_volume(path, VolumeKind.LABEL)
    return {int(value): labels.ijk_to_ras(np.argwhere(labels.array == value).mean(axis=0))[0]
            for value in np.unique(labels.array) if value > 0}


def _between_bodies(bodies: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Disc n+1 lies half-way between the body centres of vertebrae n and n+1."""
    return {n + 1: (bodies[n] + bodies[n + 1]) / 2 for n in sorted(bodies) if n + 1 in bodies}


# name -> (image, reference maker, tolerance in mm), paths relative to the real-data folder.
_SCANS: dict[str, tuple[str, Callable[[Path, Volume], dict[int, np.ndarray]], float]] = {
    "pam50_t2": ("mr_pam50_template/PAM50_small_t2.nii.gz",
                 lambda folder, _: _label_points(folder / "mr_pam50_template/PAM50_small_label_disc.nii.gz"), 5.0),
    "sct_cervical_t2": ("mr_sct_t2/t2.nii.gz",
                        lambda folder, _: _between_bodies(_label_points(folder / "mr_sct_t2/t2_labeled_center_manual.nii.gz")),
                        3.0),
    "sct_thoracolumbar_t2": ("mr_t2_lumbar/t2_lumbar.nii.gz",
                             lambda _, image: {17: image.ijk_to_ras(np.array([27, 76, 187]))[0]}, 5.0),
}
REAL_SCAN_NAMES = tuple(_SCANS)
# Folders of real lumbar exams: ``<exam>_T2w.nii.gz`` with ``<exam>_label-disc.nii.gz`` (one voxel, or a few, per
# disc, SCT numbers), each scanned as a scan named ``lumbar_<exam>``.
LUMBAR_FOLDERS = ("mr_lumbar_ivd", "mr_lumbar_vb2")
LUMBAR_PREFIX = "lumbar_"
LUMBAR_TOLERANCE_MM = 5.0


def is_lumbar_exam(name: str) -> bool:
    """Whether a real scan's name is one of the lumbar exams of ``LUMBAR_FOLDERS``."""
    return name.startswith(LUMBAR_PREFIX)


def _lumbar_exams(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Exam name -> (image, disc labels) of every complete exam in the lumbar folders, sorted by name."""
    exams = {}
    for sub in LUMBAR_FOLDERS:
        for image in sorted((folder / sub).glob("*_T2w.nii.gz")):
            labels = image.with_name(image.name.replace("_T2w.nii.gz", "_label-disc.nii.gz"))
            if labels.is_file():
                exams[LUMBAR_PREFIX + image.name.split("_")[0]] = (image, labels)
    return exams


def resolve_real_folder(folder: str | Path) -> Path:
    """The real-data folder, a relative path taken from the current directory.

    Raises:
        InputError: the folder does not exist.
    """
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise InputError(f"the real validation folder {str(folder)!r} ({path}) does not exist; point "
                         f"validation.real_folder at shared/data/real, or set it to \"\" for none")
    return path


def load_real_scans(folder: str | Path) -> list[RealScan]:
    """The real MRIs of ``folder`` (a scan whose files are absent is left out, with a log warning).

    Raises:
        InputError: the folder does not exist or holds none of the scans.
    """
    path = resolve_real_folder(folder)
    scans = []
    for name, (image_file, reference, tolerance) in _SCANS.items():
        try:
            image = read_volume(path / image_file)
            scans.append(RealScan(name, image, reference(path, image), tolerance))
        except (InputError, FileNotFoundError, OSError) as error:
            log.warning("real scan %s left out: %s", name, error)
    for name, (image_file, labels_file) in _lumbar_exams(path).items():
        try:
            scans.append(RealScan(name, read_volume(image_file), _label_points(labels_file), LUMBAR_TOLERANCE_MM))
        except (InputError, OSError) as error:
            log.warning("real scan %s left out: %s", name, error)
    if not scans:
        raise InputError(f"the real validation folder {path} holds none of the scans {', '.join(_SCANS)} "
                         f"(expected files such as {path / _SCANS['pam50_t2'][0]})")
    return scans


def score_real_scan(scan: RealScan, discs: list[DiscRecord]) -> RealScore:
    """Reference discs of ``scan`` with a predicted disc of the same number within the tolerance, head to foot."""
    predicted = {disc.number: float(disc.position_ras[2]) for disc in discs}
    errors = {number: abs(predicted[number] - float(point[2])) for number, point in scan.reference.items()
              if number in predicted}
    right = sum(error <= scan.tolerance_mm for error in errors.values())
    return RealScore(scan.name, right, len(scan.reference), [disc.number for disc in discs], errors)


def lumbar_summary(scores: list[RealScore]) -> dict:
    """The lumbar exams among ``scores`` pooled: discs named right of all their reference discs, and exams with
    every disc named right."""
    lumbar = [score for score in scores if is_lumbar_exam(score.name)]
    return {"exams": len(lumbar), "reference": sum(score.reference for score in lumbar),
            "named_right": sum(score.named_right for score in lumbar),
            "exams_all_right": sum(score.named_right == score.reference for score in lumbar),
            "per_exam": {score.name: score.named_right for score in lumbar}}


# Nine readings of an MRI: as it is, leaning 4 degrees each way, 8 % smaller and larger, two other contrasts.
PERTURBATIONS = (*POSE_CHANGES, Perturbation("gamma 0.8", gamma=0.8), Perturbation("gamma 1.25", gamma=1.25))


def perturbed_scan(scan: RealScan, change: Perturbation) -> RealScan:
    """``scan`` tilted and resized about its centre (its affine changes, its voxels do not) and its intensities
    gamma-changed; the reference discs move with the anatomy."""
    image, moved = perturbed_volume(scan.image, change)
    reference = {number: moved[:3, :3] @ point + moved[:3, 3] for number, point in scan.reference.items()}
    return RealScan(scan.name, image, reference, scan.tolerance_mm)
