"""Naming a run of vertebrae as one consecutive sequence."""

from __future__ import annotations

import pytest

from spineseg.labels import disc_name, disc_number, vertebra_name, vertebra_segment_name, vertebra_terminology
from spineseg.vertebrae.levels import assign_levels, level_to_position, position_to_level


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
    assert vertebra_name(20) == "L1" and vertebra_name(26) == "S"
    assert vertebra_segment_name(22) == "L3 vertebra" and vertebra_segment_name(26) == "Sacrum"
    assert vertebra_terminology(1).value == "14806007"
    assert vertebra_terminology(28).value == "51282000"  # T13: vertebra, level unspecified
    assert disc_name(3) == "C2/C3" and disc_name(20) == "T12/L1" and disc_name(25) == "L5/S1"
    assert disc_number("L4/L5") == 24
