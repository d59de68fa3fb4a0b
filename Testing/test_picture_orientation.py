"""The pictures carry orientation letters that match the patient's directions, whatever the input's axes."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg import pictures
from spineseg.results import DiscRecord, DiscsResult
from spineseg.phantoms.ct import make_ct_phantom

pytest.importorskip("matplotlib")


def edge_letters(monkeypatch, draw) -> list[dict[str, str]]:
    """The letters at the left, right, top and bottom edge of each view of a picture ``draw()`` writes."""
    figures = []
    original = pictures._new_figure

    def keep(*args, **options):
        figures.append(original(*args, **options))
        return figures[-1]

    monkeypatch.setattr(pictures, "_new_figure", keep)
    draw()
    views = []
    for axis in figures[0].axes:
        places = {}
        for text in axis.texts:
            if text.get_transform() is axis.transAxes:
                x, y = text.get_position()
                side = "left" if x < 0.1 else "right" if x > 0.9 else "top" if y > 0.9 else "bottom"
                places[side] = text.get_text()
        views.append(places)
    return views


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "PIR"])
def test_vertebra_views_are_labelled_posterior_anterior_and_left_right(orientation, monkeypatch, tmp_path):
    from spineseg.results import VertebraeResult, VertebraRecord

    phantom = make_ct_phantom(levels=[20, 21], spacing=(2.0, 2.0, 2.0), seed=5, orientation=orientation)
    records = [VertebraRecord(level, 1, 0.001, 1.0, (0.0, 0.0, 0.0)) for level in (20, 21)]
    result = VertebraeResult(phantom.labels, records)
    views = edge_letters(monkeypatch, lambda: pictures.write_vertebrae_picture(phantom.image, result,
                                                                               tmp_path / "v.png"))
    assert views == [{"left": "P", "right": "A", "top": "S", "bottom": "I"},
                     {"left": "L", "right": "R", "top": "S", "bottom": "I"}]
    # bright marks anterior of the spine (seen in the sagittal view) and right of it (in the coronal view) land
    # at the A and the R edge
    ras = phantom.image.ijk_to_ras(np.argwhere(np.ones(phantom.image.shape, bool)))
    centre = ras[phantom.labels.array.reshape(-1) > 0].mean(axis=0)
    marked = phantom.image.array.copy().reshape(-1)
    marked[(ras[:, 0] > centre[0] + 10) | (ras[:, 1] > centre[1] + 10)] = 3000
    image = phantom.image.with_array(marked.reshape(phantom.image.shape))
    (sagittal, coronal), _, _ = pictures._anatomical_views(image, phantom.labels)
    for view in (sagittal, coronal):
        bright = np.argwhere(view > 2500)[:, 1]
        assert bright.size and bright.mean() > view.shape[1] / 2  # right half: A, and R


@pytest.mark.parametrize("a_sign, s_sign, expected", [(-1.0, -1.0, ("A", "P", "S", "I")),
                                                     (1.0, 1.0, ("P", "A", "I", "S"))])
def test_disc_slab_letters_follow_its_geometry(a_sign, s_sign, expected, monkeypatch, tmp_path):
    slab_to_ras = np.array([[0.0, 0.0, 5.0], [0.0, a_sign, 10.0], [s_sign, 0.0, 100.0]])
    result = DiscsResult([DiscRecord(20, (5.0, 10.0, 80.0), 0.9)], slab=np.random.default_rng(0).random((64, 64)),
                         slab_to_ras=slab_to_ras)
    views = edge_letters(monkeypatch, lambda: pictures.write_discs_picture(result, tmp_path / "d.png"))
    assert tuple(views[0][side] for side in ("left", "right", "top", "bottom")) == expected
