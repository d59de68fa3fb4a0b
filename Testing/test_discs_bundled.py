"""Smoke test of the bundled phantom-trained disc model on one small phantom."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.discs.metrics import score_discs
from spineseg.choices import Task
from spineseg.discs.pipeline import label_discs
from spineseg.model_store import load_model
from spineseg.phantoms.mri import make_mri_phantom


def test_bundled_model_labels_a_lumbar_phantom():
    model = load_model(Task.DISCS, None, "cpu")
    assert model.entry.task == "discs" and model.name == "discs-mri-synth-v3"
    phantom = make_mri_phantom("lumbar", contrast="T2", spacing=(3.5, 1.2, 1.2), orientation="PIR", seed=123)
    result = label_discs(phantom.image, model, device="cpu")
    scores = score_discs(result.discs, phantom.disc_points)
    assert scores.false_negative_rate <= 0.25, result.numbers
    assert scores.label_accuracy >= 0.75, (result.numbers, sorted(phantom.disc_points))
    assert result.slab is not None and result.slab.shape == (256, 256)


def test_a_slab_cut_beside_the_spine_is_cut_again_through_the_discs(monkeypatch):
    """The edge-based mid-plane can land on the pedicles (it did on the real thoraco-lumbar T2): the discs found
    there are centred in 3D and the slab is cut again through them, so the names come out as on the midline."""
    from spineseg.discs import slab as slab_module
    from spineseg.discs.pipeline import read_discs

    model = load_model(Task.DISCS, None, "cpu")
    phantom = make_mri_phantom("lumbar", contrast="T2", spacing=(2.0, 1.0, 1.0), seed=11)  # midline at R = 0
    monkeypatch.setattr(slab_module, "find_midsagittal_x", lambda volume: 12.0)
    reading = read_discs(phantom.image, model.heatmaps, model.settings.input_size, model.settings.slab_thickness_mm,
                         model.settings.output_stride)
    assert abs(reading.slab.plane_x) <= 2.0
    scores = score_discs(reading.decoded.discs, phantom.disc_points)
    assert scores.label_accuracy == 1.0 and scores.false_negative_rate == 0.0, [d.name for d in reading.decoded.discs]
    assert abs(reading.centres_ras[:, 0]).max() <= 2.0  # each disc's own left-right centre


def test_a_whole_spine_is_placed_on_finer_windows_and_keeps_its_names(monkeypatch):
    """A whole spine fits the slab only with 2.8 mm pixels (11 mm heatmap pixels): the discs' positions are read
    again on 1 mm windows. Head to foot they come out much nearer their centres; their names do not change."""
    from spineseg.anatomy import STANDARD_LEVELS
    from spineseg.discs import pipeline

    model = load_model(Task.DISCS, None, "cpu")
    phantom = make_mri_phantom(list(STANDARD_LEVELS), contrast="T2", spacing=(3.0, 1.0, 1.0), seed=2, head=True,
                               margin_mm=40.0)

    def head_to_foot_errors(reading):
        return [abs(d.position_ras[2] - phantom.disc_points[d.number][2]) for d in reading.decoded.discs
                if d.number in phantom.disc_points]

    arguments = (phantom.image, model.heatmaps, model.settings.input_size, model.settings.slab_thickness_mm,
                 model.settings.output_stride)
    refined = pipeline.read_discs(*arguments)
    monkeypatch.setattr(pipeline, "FINE_READ_ABOVE_MM", float("inf"))
    coarse = pipeline.read_discs(*arguments)
    assert refined.slab.pixel_mm > 2.5
    assert [d.number for d in refined.decoded.discs] == [d.number for d in coarse.decoded.discs]
    assert np.median(head_to_foot_errors(refined)) <= 2.0 < 4.0 <= np.median(head_to_foot_errors(coarse))
