"""Naming a run of vertebrae as one consecutive sequence."""

from __future__ import annotations

import pytest

from spineseg.anatomy import level_to_position, position_to_level
from spineseg.labels import disc_name, disc_number, vertebra_name, vertebra_segment_name, vertebra_terminology
from spineseg.vertebrae.levels import assign_levels, count_missed_vertebrae


def test_positions_skip_the_verse_gap_before_the_sacrum():
    assert level_to_position(24) == 24 and level_to_position(26) == 25
    assert position_to_level(25) == 26
    with pytest.raises(ValueError, match="28"):
        level_to_position(28)


def test_one_bad_estimate_does_not_break_the_sequence():
    # T10..L3 with the third estimate far off.
    assert assign_levels([17.1, 17.9, 24.0, 20.2, 20.8, 22.1]) == [17, 18, 19, 20, 21, 22]


def test_incomplete_vertebrae_do_not_vote():
    assert assign_levels([3.0, 20.0, 21.0, 22.1], [False, True, True, True]) == [19, 20, 21, 22]


def test_a_sacrum_found_in_two_pieces_is_named_once_and_shifts_nothing():
    # L3, L4, L5 and a sacrum split in two by the walk: no "L5" on the sacrum's upper half.
    assert assign_levels([22.2, 23.1, 23.8, 25.0, 25.3]) == [22, 23, 24, 26, 26]
    assert assign_levels([22.2, 23.1, 23.8, 25.0]) == [22, 23, 24, 26]


def test_sequence_stays_inside_the_spine():
    assert assign_levels([23.9, 25.4, 26.3]) == [24, 26, 26]
    assert assign_levels([-3.0, 0.0]) == [1, 2]
    assert assign_levels([]) == []
    with pytest.raises(ValueError, match="only 25 levels"):
        assign_levels(list(range(1, 29)))


def test_names_and_codes():
    assert vertebra_name(20) == "L1" and vertebra_name(26) == "sacrum"
    assert vertebra_segment_name(22) == "L3 vertebra" and vertebra_segment_name(26) == "Sacrum"
    assert vertebra_terminology(1).value == "14806007"
    assert vertebra_terminology(28).value == "51282000"  # T13: vertebra, level unspecified
    assert disc_name(3) == "C2/C3" and disc_name(20) == "T12/L1" and disc_name(25) == "L5/S1"
    assert disc_number("L4/L5") == 24


def test_a_vertebra_missed_by_the_walk_is_skipped_by_the_naming():
    """Phantom seed 1002's walk: T11-L4 found, L5 missed, the sacrum found as three pieces (heights in mm)."""
    heights = [261.6, 235.2, 203.7, 169.2, 134.7, 96.6, 35.7, 25.2, 2.4]
    missed = count_missed_vertebrae(heights)
    assert missed == [0, 0, 0, 0, 0, 0, 1, 0, 0]
    regressed = [17.4, 18.7, 20.0, 21.4, 22.0, 22.7, 25.0, 20.0, 18.4]
    complete = [False, True, True, True, True, True, False, False, False]
    assert assign_levels(regressed, complete, missed) == [18, 19, 20, 21, 22, 23, 26, 26, 26]
    assert assign_levels(regressed, complete) == [18, 19, 20, 21, 22, 23, 24, 26, 26]  # without: sacrum named L5


def test_a_run_too_long_to_skip_its_misses_is_named_without_them():
    """25 pieces (a walk that went astray) with four supposed misses cannot all fit: naming ignores them."""
    missed = [0] * 25
    missed[5] = missed[10] = 2
    assert assign_levels(list(range(1, 26)), missed=missed) == list(range(1, 25)) + [26]


def test_steps_of_a_normal_spine_and_a_split_sacrum_show_no_missed_vertebra():
    cervical_to_thoracic = [300, 284, 268, 251, 233, 213, 192, 170]  # C3-T2: the steps grow by a quarter
    assert count_missed_vertebrae(cervical_to_thoracic) == [0] * 8
    assert count_missed_vertebrae([200, 164, 128, 90, 78, 66]) == [0] * 6  # L3-L5, then the sacrum in three pieces
    assert count_missed_vertebrae([100, 60]) == [0, 0]
