"""Disc metrics on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.evaluation.disc_metrics import score_discs, summarise
from spineseg.results import DiscRecord

REFERENCE = {20: np.array([0.0, 0.0, 0.0]), 21: np.array([0.0, 0.0, -35.0]), 22: np.array([0.0, 0.0, -70.0])}


def test_perfect_and_shifted_predictions():
    predicted = [DiscRecord(20, (0.0, 1.0, 0.0), 0.9), DiscRecord(21, (0.0, 0.0, -37.0), 0.8),
                 DiscRecord(22, (3.0, 0.0, -70.0), 0.7)]
    scores = score_discs(predicted, REFERENCE, threshold_mm=8.0)
    assert scores.distances_mm == pytest.approx([1.0, 2.0, 3.0])
    assert scores.false_negative_rate == 0.0 and scores.false_positive_rate == 0.0
    assert scores.label_accuracy == 1.0


def test_missed_spurious_and_mislabelled():
    predicted = {21: np.array([0.0, 0.0, 0.0]),      # right place, wrong label
                 22: np.array([0.0, 0.0, -36.0]),    # right place, wrong label
                 24: np.array([0.0, 50.0, -200.0])}  # nowhere near a disc
    scores = score_discs(predicted, REFERENCE, threshold_mm=8.0)
    assert scores.false_negatives == 1 and scores.false_negative_rate == pytest.approx(1 / 3)
    assert scores.false_positives == 1 and scores.false_positive_rate == pytest.approx(1 / 3)
    assert scores.label_accuracy == 0.0
    pooled = summarise([scores, score_discs({20: REFERENCE[20]}, REFERENCE)])
    assert pooled["reference_discs"] == 6 and pooled["false_negative_rate"] == pytest.approx(3 / 6)
    assert pooled["median_distance_mm"] == pytest.approx(0.0)


def test_nothing_predicted_and_bad_threshold():
    assert score_discs([], REFERENCE).false_negative_rate == 1.0
    with pytest.raises(ValueError, match="threshold_mm"):
        score_discs([], REFERENCE, threshold_mm=0)
