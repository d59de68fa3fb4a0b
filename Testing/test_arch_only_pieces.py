"""A posterior arch that the walk took for a whole vertebra is dropped before naming (issue 28, item 2)."""

import numpy as np

from spineseg.vertebrae.pipeline import drop_arch_only
from spineseg.vertebrae.traversal import FoundVertebra


def piece(j_range: tuple[int, int], k_range: tuple[int, int]) -> FoundVertebra:
    """A block of sure voxels on a 30^3 working grid (i across, j towards the front, k towards the head)."""
    probability = np.zeros((30, 30, 30), np.float16)
    probability[10:20, j_range[0]:j_range[1], k_range[0]:k_range[1]] = 0.9
    voxels = np.argwhere(probability > 0.5)
    return FoundVertebra(corner=np.zeros(3, int), probability=probability, voxel_count=len(voxels), completeness=1.0,
                         position=0.5, centroid=voxels.mean(axis=0))


# The canal's centre line at j = 12 from k = 0 to k = 29 (working voxels), head to foot.
CANAL = np.array([[15.0, 12.0, k] for k in range(29, -1, -1)])


def test_an_arch_behind_the_canal_is_dropped_and_a_vertebra_with_its_body_is_kept():
    body_and_arch = piece((5, 25), (18, 26))  # from behind the canal to well in front of it
    body = piece((15, 25), (10, 17))
    arch_alone = piece((2, 11), (2, 9))
    kept = drop_arch_only([body_and_arch, body, arch_alone], CANAL)
    assert kept == [body_and_arch, body]


def test_pieces_where_the_canal_was_not_seen_are_kept_whatever_their_place():
    arch_alone = piece((2, 11), (2, 9))
    upper_canal = CANAL[CANAL[:, 2] >= 15]  # the canal was seen only above k = 15
    assert drop_arch_only([arch_alone], upper_canal) == [arch_alone]
    assert drop_arch_only([arch_alone], None) == [arch_alone]
