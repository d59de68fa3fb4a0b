"""The one head-to-foot order of levels, positions, typical sizes, and inference kept apart from the phantoms."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spineseg.anatomy import (
    most_vertebrae_in,
    HEAD_TO_FOOT, L6, SACRUM, STANDARD_LEVELS, T13, check_consecutive, level_size, level_to_position,
    position_to_level,
)


def test_one_order_with_the_variants_in_place():
    assert HEAD_TO_FOOT.index(T13) == HEAD_TO_FOOT.index(19) + 1 == HEAD_TO_FOOT.index(20) - 1
    assert HEAD_TO_FOOT.index(L6) == HEAD_TO_FOOT.index(24) + 1 == HEAD_TO_FOOT.index(SACRUM) - 1
    assert STANDARD_LEVELS == [*range(1, 25), SACRUM]


def test_positions_round_trip():
    assert [level_to_position(level) for level in STANDARD_LEVELS] == list(range(1, 26))
    assert [position_to_level(p) for p in range(1, 26)] == STANDARD_LEVELS
    for bad in (0, 26):
        with pytest.raises(ValueError, match="position"):
            position_to_level(bad)


def test_consecutive_levels():
    check_consecutive([23, 24, SACRUM])
    for bad in ([], [20, 22], [24, L6], [21, 20]):
        with pytest.raises(ValueError, match="levels"):
            check_consecutive(bad)


def test_sizes_grow_towards_the_foot():
    heights = [level_size(level).body_height for level in range(1, 25)]
    assert heights == sorted(heights)
    assert level_size(13).has_ribs and not level_size(20).has_ribs
    with pytest.raises(ValueError, match="27"):
        level_size(27)


def test_most_vertebrae_in_an_extent_counts_the_smallest_levels_plus_two_cut_ones():
    assert most_vertebrae_in(0.0) == 2  # a thin slab may cut two vertebrae at a disc
    assert most_vertebrae_in(14.0) == 3  # C1 (10 mm body, 4 mm disc) fits whole
    counts = [most_vertebrae_in(mm) for mm in range(0, 1200, 10)]
    assert counts == sorted(counts)
    assert counts[-1] == len(STANDARD_LEVELS) + 2
    assert most_vertebrae_in(336.0) == 17
    with pytest.raises(ValueError, match="extent_mm"):
        most_vertebrae_in(-1.0)


def test_inference_does_not_import_the_phantoms():
    code = ("import sys; import spineseg.vertebrae.pipeline, spineseg.discs.pipeline, spineseg.discs.decode; "
            "print(sorted(m for m in sys.modules if m.startswith('spineseg.phantoms')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
