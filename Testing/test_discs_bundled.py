"""Smoke test of the bundled phantom-trained disc model on one small phantom."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.evaluation.disc_metrics import score_discs
from spineseg.choices import Task
from spineseg.discs.pipeline import label_discs
from spineseg.model_store import load_model
from spineseg.phantoms.mri import make_mri_phantom
from spineseg.results import DiscRecord


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


def test_a_spine_leaning_to_one_side_is_read_on_a_slab_tilted_with_it(monkeypatch):
    """A patient lying 8 degrees off: a sagittal slab grazes the spine's ends and misses half its discs; the slab
    is cut again along the line of the discs' centres and finds them all, named right."""
    from spineseg.discs import pipeline
    from spineseg.evaluation.real_mris import Perturbation, RealScan, perturbed_scan

    model = load_model(Task.DISCS, None, "cpu")
    phantom = make_mri_phantom("thoracolumbar", contrast="T2", spacing=(2.0, 1.0, 1.0), seed=3)
    leaning = perturbed_scan(RealScan("phantom", phantom.image, dict(phantom.disc_points), 5.0),
                             Perturbation("leaning 8 degrees", tilt_a_deg=-8.0))

    def read():
        reading = pipeline.read_discs(leaning.image, model.heatmaps, model.settings.input_size,
                                      model.settings.slab_thickness_mm, model.settings.output_stride)
        found = [DiscRecord(d.number, tuple(c), d.confidence)
                 for d, c in zip(reading.decoded.discs, reading.centres_ras)]
        return reading, score_discs(found, leaning.reference)

    reading, scores = read()
    assert reading.slab.lateral_slope == pytest.approx(np.tan(np.radians(8.0)), abs=0.02)
    assert scores.false_negative_rate == 0.0 and scores.label_accuracy == 1.0
    monkeypatch.setattr(pipeline, "TILT_MIN_DISCS", 10**6)  # sagittal slabs only, as before
    reading, scores = read()
    assert reading.slab.lateral_slope == 0.0 and scores.false_negative_rate >= 0.4


def test_the_plane_follows_the_discs_in_line_and_ignores_a_few_centred_wrongly():
    from spineseg.discs.pipeline import spine_plane

    s = np.array([100.0, 70.0, 40.0, 10.0, -20.0, -50.0])
    leaning = np.column_stack([5.0 + 0.15 * s, np.zeros(6), s])
    leaning[[0, 5], 0] = [-20.0, 30.0]  # two discs centred far off (a slab that grazed the spine there)
    plane, slope = spine_plane(leaning, plane_s=0.0)
    assert (plane, slope) == (pytest.approx(5.0), pytest.approx(0.15))
    straight = np.column_stack([np.array([0.5, -0.5, 0.8, -0.2, 0.1, -0.6]), np.zeros(6), s])
    assert spine_plane(straight, plane_s=0.0) == (pytest.approx(np.median(straight[:, 0])), 0.0)
    untrusted = np.array([True, True, False, False, False, True])
    assert spine_plane(leaning, 0.0, trusted=untrusted)[1] == 0.0  # the trusted discs do not line up: no tilt
    assert spine_plane(leaning[:2], 0.0)[1] == 0.0


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
