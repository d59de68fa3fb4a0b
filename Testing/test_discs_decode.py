"""Chain decoding on hand-made heatmaps: missing disc, spurious peak, missed top disc, anchors."""

from __future__ import annotations

import numpy as np

from spineseg.discs.decode import DecodeSettings, decode_chain, decode_heatmaps, expected_spacing_mm
from spineseg.discs.targets import N_CHANNELS, channel_of, render_heatmaps

PIXEL_MM = 1.0  # input pixel size
STRIDE = 4
SLAB_TO_RAS = np.array([[0.0, 0.0, 0.0], [0.0, -PIXEL_MM, 128.0], [-PIXEL_MM, 0.0, 128.0]])


def _disc_rows(numbers: list[int], first_row: float = 30.0) -> dict[int, float]:
    rows, row = {}, first_row
    for previous, number in zip([numbers[0]] + numbers[:-1], numbers):
        if number != previous:
            row += expected_spacing_mm(previous, number) / PIXEL_MM
        rows[number] = row
    return rows


def _heatmaps(points: dict[int, tuple[float, float]], peak: float = 0.9) -> np.ndarray:
    heatmaps, _ = render_heatmaps({n: np.array(p) for n, p in points.items()}, 256, STRIDE, sigma=1.25)
    # Neighbouring channels answer weakly at each disc, as a trained network does.
    blurred = heatmaps.copy()
    for number in points:
        c = channel_of(number)
        for other in (c - 1, c + 1):
            if 0 <= other < N_CHANNELS:
                blurred[other] = np.maximum(blurred[other], 0.3 * heatmaps[c])
    return peak * blurred


ROWS = _disc_rows(list(range(20, 26)))
POINTS = {n: (r, 120.0 + 0.1 * r) for n, r in ROWS.items()}


def test_all_discs_found_with_their_numbers_and_positions():
    discs = decode_heatmaps(_heatmaps(POINTS), SLAB_TO_RAS, PIXEL_MM, STRIDE)
    assert [d.number for d in discs] == list(range(20, 26))
    for disc in discs:
        row, col = POINTS[disc.number]
        expected = np.array([0.0, 128.0 - col, 128.0 - row])
        assert np.linalg.norm(np.array(disc.position_ras) - expected) < 1.0
        assert 0.0 <= disc.confidence <= 1.0


def test_missing_disc_keeps_the_other_labels():
    points = {n: p for n, p in POINTS.items() if n != 22}
    discs = decode_heatmaps(_heatmaps(points), SLAB_TO_RAS, PIXEL_MM, STRIDE)
    assert [d.number for d in discs] == [20, 21, 23, 24, 25]


def test_missing_top_disc_does_not_shift_labels():
    points = {n: p for n, p in POINTS.items() if n != 20}
    discs = decode_heatmaps(_heatmaps(points), SLAB_TO_RAS, PIXEL_MM, STRIDE)
    assert [d.number for d in discs] == [21, 22, 23, 24, 25]


def test_spurious_peak_is_left_out():
    heatmaps = _heatmaps(POINTS)
    # A strong peak in disc 22's channel, between discs 21 and 22 where no disc can be.
    fake_row = 0.5 * (ROWS[21] + ROWS[22])
    extra, _ = render_heatmaps({22: np.array([fake_row, 120.0])}, 256, STRIDE, sigma=1.25)
    heatmaps = np.maximum(heatmaps, 0.8 * extra)
    discs = decode_heatmaps(heatmaps, SLAB_TO_RAS, PIXEL_MM, STRIDE)
    assert [d.number for d in discs] == list(range(20, 26))
    true_22 = np.array([0.0, 128.0 - POINTS[22][1], 128.0 - ROWS[22]])
    position_22 = np.array([d.position_ras for d in discs if d.number == 22][0])
    assert np.linalg.norm(position_22 - true_22) < 1.0


def test_a_site_beside_the_spine_is_not_taken_for_the_next_disc():
    """A bright spot in front of the top disc, one disc spacing away, is not chained to it sideways."""
    top_row, top_col = POINTS[20]
    beside = (top_row - 3.0, top_col - expected_spacing_mm(19, 20) / PIXEL_MM)
    discs = decode_heatmaps(_heatmaps({19: beside, **POINTS}), SLAB_TO_RAS, PIXEL_MM, STRIDE)
    assert [d.number for d in discs] == list(range(20, 26))
    assert all(abs(d.position_ras[1] - (128.0 - POINTS[d.number][1])) < 2.0 for d in discs)  # all on the spine
    sideways = decode_heatmaps(_heatmaps({19: beside, **POINTS}), SLAB_TO_RAS, PIXEL_MM, STRIDE,
                               DecodeSettings(step_weight=0.0))
    assert [d.number for d in sideways] == list(range(19, 26))  # what the chain did without the step cost


def test_empty_heatmaps_give_no_discs():
    assert decode_heatmaps(np.zeros((N_CHANNELS, 64, 64), np.float32), SLAB_TO_RAS, PIXEL_MM, STRIDE) == []


def test_small_and_large_spines_keep_all_discs_and_labels():
    # A person 18 % smaller or larger than the typical adult of the spacing prior.
    for scale in (0.82, 1.2):
        rows = {n: 20.0 + scale * (r - 20.0) for n, r in _disc_rows(list(range(20, 26)), first_row=20.0).items()}
        points = {n: (r, 120.0) for n, r in rows.items()}
        discs = decode_heatmaps(_heatmaps(points, peak=0.6), SLAB_TO_RAS, PIXEL_MM, STRIDE)
        assert [d.number for d in discs] == list(range(20, 26)), scale


# Anchored decoding: the network's channels (its guess of the level) may be several levels off, as on real scans;
# C2 or the sacrum in view fixes the count.

def _shifted_heatmaps(true_rows: dict[int, float], shift: int) -> np.ndarray:
    """Heatmaps that put each disc in the channel ``shift`` numbers away from its own."""
    return _heatmaps({n + shift: (r, 120.0) for n, r in true_rows.items()})


def _inside(first_row: int, last_row: int) -> np.ndarray:
    inside = np.zeros((256, 256), dtype=bool)
    inside[first_row : last_row + 1, 60:200] = True
    return inside


def _names(decoded) -> list[str]:
    return [d.name for d in decoded.discs]


def _with_anchor_channel(heatmaps: np.ndarray, row: float, number: int, peak: float = 0.9) -> np.ndarray:
    """The network recognises an anchor at the end disc at ``row``: channel ``number`` lights up there too."""
    anchor = render_heatmaps({number: np.array([row, 120.0])}, 256, STRIDE, sigma=1.25)[0]
    heatmaps = heatmaps.copy()
    heatmaps[channel_of(number)] = np.maximum(heatmaps[channel_of(number)], peak * anchor[channel_of(number)])
    return heatmaps


def test_c2_anchor_names_a_cervical_chain_the_network_calls_lumbar():
    # C2/C3 ... C7/T1; the network put them in the channels of T12/L1 ... L4/L5 (its level guess is off), but
    # it also sees the dens and the skull base above the top disc (the C2/C3 channel lights up there).
    rows = _disc_rows(list(range(3, 9)), first_row=120.0)
    heatmaps = _shifted_heatmaps(rows, 16)  # L1/L2 ... L4/L5 channels, no L5/S1 claim
    decoded = decode_chain(_with_anchor_channel(heatmaps, rows[3], 3), SLAB_TO_RAS, PIXEL_MM, STRIDE,
                           inside=_inside(40, int(rows[8]) + 8))  # C2, skull base and brain above; cut below C7/T1
    assert decoded.anchored and decoded.anchor == "C2"
    assert _names(decoded) == ["C2/C3", "C3/C4", "C4/C5", "C5/C6", "C6/C7", "C7/T1"]
    assert [round(128.0 - d.position_ras[2]) for d in decoded.discs] == [round(r) for r in rows.values()]


def test_short_chain_claiming_both_anchors_is_unanchored():
    rows = _disc_rows(list(range(3, 9)), first_row=120.0)
    heatmaps = _with_anchor_channel(_shifted_heatmaps(rows, 17), rows[3], 3)  # C2 at the top, "L5/S1" at the foot
    decoded = decode_chain(heatmaps, SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=_inside(40, 255))
    assert not decoded.anchored


def test_sacrum_anchor_names_a_lumbar_chain_the_network_calls_thoracic():
    rows = _disc_rows(list(range(20, 26)), first_row=5.0)
    heatmaps = _with_anchor_channel(_shifted_heatmaps(rows, -4), rows[25], 25)  # the sacrum seen below L5/S1
    decoded = decode_chain(heatmaps, SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=_inside(0, 255))
    assert decoded.anchored and decoded.anchor == "sacrum"
    assert _names(decoded) == ["T12/L1", "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]


def test_sacrum_anchor_keeps_counting_across_a_missed_disc():
    rows = _disc_rows(list(range(20, 26)), first_row=5.0)
    del rows[23]  # L3/L4 not found
    heatmaps = _with_anchor_channel(_shifted_heatmaps(rows, -4), rows[25], 25)
    decoded = decode_chain(heatmaps, SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=_inside(0, 255))
    assert _names(decoded) == ["T12/L1", "L1/L2", "L2/L3", "L4/L5", "L5/S1"]


def test_room_beyond_the_end_discs_is_no_anchor():
    # A thoracic chain (T2/T3 ... T9/T10) in a tall field of view: plenty of image beyond both ends, but no
    # anchor anatomy; the regression of the room rule named thoracic phantoms from a C2 or sacrum that was not there.
    rows = _disc_rows(list(range(10, 18)), first_row=60.0)
    decoded = decode_chain(_heatmaps({n: (r, 120.0) for n, r in rows.items()}), SLAB_TO_RAS, PIXEL_MM, STRIDE,
                           inside=_inside(0, 255))
    assert not decoded.anchored
    assert [d.number for d in decoded.discs] == list(range(10, 18))


def test_anchor_cut_off_by_the_image_edge_is_not_in_view():
    # The network claims L5/S1 at the last disc, but the scan ends right below it: the sacrum is not in view.
    decoded = decode_chain(_heatmaps(POINTS), SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=_inside(0, int(ROWS[25]) + 3))
    assert not decoded.anchored


def test_thoracic_only_chain_is_unanchored_with_lowered_confidence():
    rows = _disc_rows(list(range(11, 18)), first_row=40.0)  # T3/T4 ... T9/T10, the scan cut close to both ends
    heatmaps = _heatmaps({n: (r, 120.0) for n, r in rows.items()})
    inside = _inside(int(rows[11]) - 15, int(rows[17]) + 15)
    decoded = decode_chain(heatmaps, SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=inside)
    assert not decoded.anchored and decoded.anchor is None
    assert [d.number for d in decoded.discs] == list(range(11, 18))  # the network's names, kept
    anchored_confidence = DecodeSettings().unanchored_confidence * 0.9
    assert all(d.confidence <= anchored_confidence + 1e-6 for d in decoded.discs)


def test_network_anchors_at_a_confident_l5_s1_with_the_sacrum_in_view():
    # The network is sure the last disc is L5/S1 and the scan goes on below it (the sacrum is in view).
    decoded = decode_chain(_heatmaps(POINTS), SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=_inside(0, 255))
    assert decoded.anchor == "sacrum"
    assert [d.number for d in decoded.discs] == list(range(20, 26))


def test_a_faint_disc_above_the_chain_top_is_counted_by_its_spacing():
    # A real lumbar scan often shows the disc at its top edge only faintly (the network answers 0.1-0.16 there,
    # below the decoder's threshold): it is the next disc up when it lies one disc spacing above the top disc,
    # in the chain's direction; a faint site half a spacing up, or beside the spine, is not.
    rows = _disc_rows(list(range(19, 26)), first_row=20.0)
    points = {n: (r, 120.0) for n, r in rows.items() if n != 19}
    heatmaps = _with_anchor_channel(_heatmaps(points), rows[25], 25)
    faint = render_heatmaps({19: np.array([rows[19], 121.0]), 18: np.array([rows[20] - 16.0, 200.0])}, 256, STRIDE,
                            sigma=1.25)[0]
    heatmaps = np.maximum(heatmaps, 0.15 * faint)
    decoded = decode_chain(heatmaps, SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=_inside(0, 255))
    assert decoded.anchor == "sacrum"
    assert _names(decoded) == ["T11/T12", "T12/L1", "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]
    assert [round(128.0 - d.position_ras[2]) for d in decoded.discs] == [round(r) for r in rows.values()]
    without = decode_chain(heatmaps, SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=_inside(0, 255),
                           settings=DecodeSettings(extend_reach=(0.0, 0.0)))
    assert _names(without)[0] == "T12/L1"  # the rule, not the threshold, finds it


def test_a_faint_site_half_a_spacing_above_the_top_is_no_disc():
    rows = _disc_rows(list(range(20, 26)), first_row=60.0)
    heatmaps = _with_anchor_channel(_heatmaps({n: (r, 120.0) for n, r in rows.items()}), rows[25], 25)
    faint = render_heatmaps({19: np.array([rows[20] - 16.0, 120.0])}, 256, STRIDE, sigma=1.25)[0]
    decoded = decode_chain(np.maximum(heatmaps, 0.15 * faint), SLAB_TO_RAS, PIXEL_MM, STRIDE, inside=_inside(0, 255))
    assert _names(decoded) == ["T12/L1", "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]
