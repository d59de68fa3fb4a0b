"""Scores of a vertebra segmentation against a reference label map.

Per vertebra: Dice and average symmetric surface distance (ASSD, mm), both by
level (same label value) and by overlap (the predicted vertebra that overlaps
most, whatever its name). Background is never a vertebra; predicted
vertebrae that match no reference vertebra count as false positives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["dice", "surface_distances", "average_symmetric_surface_distance", "VertebraScore",
           "SegmentationScores", "score_vertebrae"]

MATCH_DICE = 0.5  # a predicted vertebra "matches" a reference one above this overlap


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``a`` to ``b``'s surface, and back."""
    both = a | b
    box = ndimage.find_objects(both.astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
    a_surface, b_surface = _surface(a[box]), _surface(b[box])
    to_b = ndimage.distance_transform_edt(~b_surface, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~a_surface, sampling=spacing)
    return to_b[a_surface], to_a[b_surface]


def average_symmetric_surface_distance(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> float:
    """Mean of all surface-to-surface distances in both directions, in mm (inf if one mask is empty)."""
    a, b = a.astype(bool), b.astype(bool)
    if not a.any() or not b.any():
        return float("inf")
    forward, backward = surface_distances(a, b, np.asarray(spacing, dtype=float))
    return float(np.concatenate([forward, backward]).mean())


@dataclass(frozen=True)
class VertebraScore:
    """Scores of one reference vertebra."""

    level: int
    dice: float  # against the prediction with the same label
    assd_mm: float
    matched_label: int | None  # predicted label that overlaps most (Dice >= 0.5), if any
    matched_dice: float
    identified: bool  # the overlapping prediction carries the right label
    completeness_correct: bool | None = None


@dataclass
class SegmentationScores:
    """All per-vertebra scores plus the summary a user reads first."""

    vertebrae: list[VertebraScore] = field(default_factory=list)
    false_positive_labels: list[int] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        return float(np.mean([v.dice for v in self.vertebrae])) if self.vertebrae else float("nan")

    @property
    def mean_matched_dice(self) -> float:
        return float(np.mean([v.matched_dice for v in self.vertebrae])) if self.vertebrae else float("nan")

    @property
    def mean_assd_mm(self) -> float:
        finite = [v.assd_mm for v in self.vertebrae if np.isfinite(v.assd_mm)]
        return float(np.mean(finite)) if finite else float("inf")

    @property
    def identification_rate(self) -> float:
        return float(np.mean([v.identified for v in self.vertebrae])) if self.vertebrae else float("nan")

    @property
    def missed(self) -> int:
        return sum(v.matched_label is None for v in self.vertebrae)

    @property
    def completeness_accuracy(self) -> float:
        judged = [v.completeness_correct for v in self.vertebrae if v.completeness_correct is not None]
        return float(np.mean(judged)) if judged else float("nan")

    def summary(self) -> dict:
        return {
            "vertebrae": len(self.vertebrae),
            "mean_dice": round(self.mean_dice, 4),
            "mean_matched_dice": round(self.mean_matched_dice, 4),
            "mean_assd_mm": round(self.mean_assd_mm, 3),
            "identification_rate": round(self.identification_rate, 4),
            "missed": self.missed,
            "false_positives": len(self.false_positive_labels),
            "completeness_accuracy": round(self.completeness_accuracy, 4),
        }


def score_vertebrae(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: np.ndarray | tuple[float, float, float],
    predicted_complete: dict[int, bool] | None = None,
    reference_complete: dict[int, bool] | None = None,
) -> SegmentationScores:
    """Compare two label maps of the same grid (0 = background, other values = vertebrae).

    Args:
        prediction, reference: integer label maps of equal shape.
        spacing: voxel size in mm (for surface distances).
        predicted_complete: completeness decision per predicted label.
        reference_complete: true completeness per reference label.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    spacing = np.asarray(spacing, dtype=float)
    reference_levels = [int(v) for v in np.unique(reference) if v != 0]
    predicted_levels = [int(v) for v in np.unique(prediction) if v != 0]
    matched_predictions: set[int] = set()
    scores = SegmentationScores()
    for level in reference_levels:
        truth = reference == level
        same_label = prediction == level
        overlapping = [int(v) for v in np.unique(prediction[truth]) if v != 0]
        best_label, best_dice = None, 0.0
        for candidate in overlapping:
            value = dice(prediction == candidate, truth)
            if value > best_dice:
                best_label, best_dice = candidate, value
        if best_dice < MATCH_DICE:
            best_label = None
        else:
            matched_predictions.add(best_label)
        completeness_correct = None
        if best_label is not None and predicted_complete is not None and reference_complete is not None:
            if best_label in predicted_complete and level in reference_complete:
                completeness_correct = predicted_complete[best_label] == reference_complete[level]
        scores.vertebrae.append(
            VertebraScore(
                level=level,
                dice=dice(same_label, truth),
                assd_mm=average_symmetric_surface_distance(same_label, truth, spacing),
                matched_label=best_label,
                matched_dice=best_dice,
                identified=best_label == level,
                completeness_correct=completeness_correct,
            )
        )
    scores.false_positive_labels = [label for label in predicted_levels if label not in matched_predictions]
    return scores
