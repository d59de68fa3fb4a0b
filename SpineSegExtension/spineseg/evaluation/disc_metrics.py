"""Scores of predicted disc points against reference points, in millimetres.

* distance: for each reference disc detected (a prediction within
  ``threshold_mm``), the distance to the nearest prediction;
* false-negative rate: reference discs with no prediction within ``threshold_mm``;
* false-positive rate: predictions with no reference disc within ``threshold_mm``;
* label accuracy: detected predictions whose nearest reference disc has their number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..results import DiscRecord

__all__ = ["DiscScores", "score_discs", "summarise"]


@dataclass(frozen=True)
class DiscScores:
    """Scores of one image (counts kept so that several images can be pooled)."""

    distances_mm: list[float]
    n_reference: int
    n_predicted: int
    false_negatives: int
    false_positives: int
    correct_labels: int

    @property
    def false_negative_rate(self) -> float:
        return self.false_negatives / self.n_reference if self.n_reference else 0.0

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.n_predicted if self.n_predicted else 0.0

    @property
    def label_accuracy(self) -> float:
        matched = self.n_predicted - self.false_positives
        return self.correct_labels / matched if matched else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "false_negative_rate": self.false_negative_rate,
                "false_positive_rate": self.false_positive_rate, "label_accuracy": self.label_accuracy}


def score_discs(predicted: list[DiscRecord] | dict[int, np.ndarray], reference: dict[int, np.ndarray],
                threshold_mm: float = 8.0) -> DiscScores:
    """Compare predictions with reference disc points (number -> RAS mm).

    Args:
        predicted: DiscRecords or a number -> RAS mapping.
        reference: number -> RAS position of each reference disc.
        threshold_mm: a prediction farther than this from every reference disc is false.
    """
    if threshold_mm <= 0:
        raise ValueError(f"threshold_mm must be positive, got {threshold_mm}")
    if isinstance(predicted, dict):
        pred = [(int(n), np.asarray(p, dtype=float)) for n, p in predicted.items()]
    else:
        pred = [(r.number, np.asarray(r.position_ras, dtype=float)) for r in predicted]
    ref = [(int(n), np.asarray(p, dtype=float)) for n, p in reference.items()]
    if not ref or not pred:
        return DiscScores([], len(ref), len(pred), len(ref), len(pred), 0)
    distance = np.linalg.norm(np.array([p for _, p in pred])[:, None] - np.array([p for _, p in ref])[None], axis=2)
    distances, false_negatives = [], 0
    for j in range(len(ref)):
        nearest = float(distance[:, j].min())
        if nearest <= threshold_mm:
            distances.append(nearest)
        else:
            false_negatives += 1
    false_positives, correct = 0, 0
    for i, (number, _) in enumerate(pred):
        j = int(np.argmin(distance[i]))
        if distance[i, j] > threshold_mm:
            false_positives += 1
        elif ref[j][0] == number:
            correct += 1
    return DiscScores(distances, len(ref), len(pred), false_negatives, false_positives, correct)


def summarise(scores: list[DiscScores]) -> dict:
    """Pool several images: median and mean distance, FN, FP rates and label accuracy."""
    distances = [d for s in scores for d in s.distances_mm]
    n_ref = sum(s.n_reference for s in scores)
    n_pred = sum(s.n_predicted for s in scores)
    fn = sum(s.false_negatives for s in scores)
    fp = sum(s.false_positives for s in scores)
    correct = sum(s.correct_labels for s in scores)
    return {
        "images": len(scores),
        "reference_discs": n_ref,
        "predicted_discs": n_pred,
        "median_distance_mm": float(np.median(distances)) if distances else float("nan"),
        "mean_distance_mm": float(np.mean(distances)) if distances else float("nan"),
        "false_negative_rate": fn / n_ref if n_ref else 0.0,
        "false_positive_rate": fp / n_pred if n_pred else 0.0,
        "label_accuracy": correct / (n_pred - fp) if n_pred - fp else 0.0,
    }
