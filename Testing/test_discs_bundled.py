"""Smoke test of the bundled phantom-trained disc model on one small phantom."""

from __future__ import annotations

import pytest

from spineseg.discs.metrics import score_discs
from spineseg.choices import Task
from spineseg.discs.pipeline import label_discs
from spineseg.model_store import load_model
from spineseg.phantoms.mri import make_mri_phantom


def test_bundled_model_labels_a_lumbar_phantom():
    model = load_model(Task.DISCS, None, "cpu")
    assert model.entry.task == "discs" and model.name == "discs-mri-phantom-v2"
    phantom = make_mri_phantom("lumbar", contrast="T2", spacing=(3.5, 1.2, 1.2), orientation="PIR", seed=123)
    result = label_discs(phantom.image, model, device="cpu")
    scores = score_discs(result.discs, phantom.disc_points)
    assert scores.false_negative_rate <= 0.25, result.numbers
    assert scores.label_accuracy >= 0.75, (result.numbers, sorted(phantom.disc_points))
    assert result.slab is not None and result.slab.shape == (256, 256)
