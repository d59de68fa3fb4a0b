"""The chain of vertebrae: the walk's pieces regrouped between the disc planes, one vertebra per slab.

A spine is a chain: one body in front of the canal, a disc between two
bodies. The walk's pieces do not know that: on a real chest CT each piece took
the lower half of one body and the upper half of the next. Given the disc
planes, the bone falls into slabs, one vertebra each: carried on backwards, a
disc's plane passes between two arches too (on the chest CT's reference labels
84 % of each arch lies between its own two planes, as many as with any shift
or tilt tried). Each piece is matched to one slab (in order head to foot, by
the overlap of their bodies), the slabs are named by their place in the chain,
and the pieces' confident voxels take the name of the slab they lie in; near a
plane the bone division (:mod:`.bone_division`) finds the boundary. A slab
between two matched ones that no piece took is a vertebra the walk missed: it
is named by the count and seeded from its own bone.

A piece that matches no slab but lies wholly in slabs its neighbours took,
each one body tall, is a remnant of a vertebra the walk cut in two: its voxels
take their slabs' names like the rest. Where the planes and the pieces
disagree otherwise (a disc the planes missed, a plane inside a body) nothing is
regrouped. C1, C2 and the sacrum keep their pieces; other pieces beyond the
canal's ends follow the renaming of the chain's end next to them.
"""

from __future__ import annotations

import numpy as np

from .disc_planes import DiscPlane

__all__ = ["canal_centre_at", "distance_across_canal", "distance_beside_canal", "in_body_region", "match_in_order", "regroup_at_discs", "slab_and_distance",
           "voxels_to_ras"]

# The body region: in front of the canal's centre by more than CANAL_RADIUS_MM and at most BODY_DEPTH_MM, and
# within BODY_HALF_WIDTH_MM of it across (adult bodies: 15-50 mm wide, 15-35 mm deep, plus the cortex's blur).
CANAL_RADIUS_MM = 6.0
BODY_DEPTH_MM = 70.0
BODY_HALF_WIDTH_MM = 30.0
# The canal's line often ends inside the last vertebra it passes (the ring of bone opens below a body); the
# chain reaches this far beyond its ends (about one body).
CANAL_END_REACH_MM = 30.0
# A vertebra the walk missed is seeded from its slab's bone (HU) within this distance of the canal's centre (a
# lumbar transverse process reaches about 40 mm from it, a spinous process about 50 mm behind it).
MISSED_BONE_HU = 150.0
MISSED_REACH_MM = 50.0
# Seeds stay this far from a disc plane (the plane's error and the endplates' thickness): the bone division
# finds the boundary there.
SEED_MARGIN_MM = 3.0
# Behind the canal of the lumbar spine, seeds stay this far from a disc plane: there the superior articular
# processes of the vertebra below rise above the plane carried backwards and the inferior ones of the vertebra
# above drop below it (the facets stand upright), so the bone division finds that boundary. The thoracic facets
# lie almost in the plane, which divides their arches well (docs/vertebrae-physics.md, section 9).
LUMBAR_ARCH_SEED_MARGIN_MM = 8.0
FIRST_LUMBAR_LEVEL = 20  # L1: a slab named L1 or lower takes the lumbar margin behind the canal
# Behind the canal of T1-T10, the laminae and spinous processes slope down over the vertebra below: there the
# boundary between two vertebrae is the disc plane lowered by THORACIC_ARCH_SLOPE mm for every mm beyond
# THORACIC_ARCH_START_MM behind the canal's centre (about 22 degrees; docs/vertebrae-physics.md, section 9).
THORACIC_ARCH_SLOPE = 0.4
THORACIC_ARCH_START_MM = 5.0
THORACIC_ARCH_LEVELS = range(8, 18)  # T1-T10 (T11 and T12 carry lumbar-like arches)
# The chain is not believed when a piece holds this share of its body in a slab another piece took (a disc the
# planes missed), or a slab's height is outside this range of the median slab's (a plane inside a body).
MERGED_BODY_SHARE = 0.6
SLAB_HEIGHT_RANGE = (0.5, 1.7)
# A piece the matching left out is a remnant of a vertebra the walk cut in two when the slabs holding
# REMNANT_MIN_SHARE of its body were all taken, and it either holds STRADDLE_SHARE of its body on each side of one
# plane or lies in one slab of a body's height.
REMNANT_MIN_SHARE = 0.1
STRADDLE_SHARE = 0.25
# Where the pieces and the planes disagree, the planes alone decide when an anchor read along them names their
# slabs and the pitch is even: each slab's height within this ratio of its neighbours' (a missed disc doubles one,
# a plane inside a body halves one; from the top of the chest to the sacrum the pitch changes by 5-20 % a level).
EVEN_PITCH_RATIO = 0.75
# Levels that regrouping may give: C3-L5 (C1-C2 and the sacrum keep their pieces).
FIRST_CHAIN_LEVEL, LAST_CHAIN_LEVEL = 3, 24


def voxels_to_ras(where: np.ndarray, ras_of: np.ndarray) -> np.ndarray:
    """Voxel indices (n x 3) of a grid or box mapped to RAS mm by its 4 x 4 matrix ``ras_of``."""
    return where @ ras_of[:3, :3].T + ras_of[:3, 3]


def canal_centre_at(heights: np.ndarray, canal: np.ndarray) -> np.ndarray:
    """The canal's centre (RAS mm) at each superior coordinate in ``heights`` (clamped at the line's ends)."""
    order = np.argsort(canal[:, 2])
    line = canal[order]
    return np.stack([np.interp(heights, line[:, 2], line[:, a]) for a in range(3)], axis=1)


def distance_across_canal(ras: np.ndarray, canal: np.ndarray) -> np.ndarray:
    """Each point's distance (mm) from the canal's centre at its own height, in the axial plane."""
    return np.linalg.norm((ras - canal_centre_at(ras[:, 2], canal))[:, :2], axis=1)


def distance_beside_canal(ras: np.ndarray, canal: np.ndarray) -> np.ndarray:
    """Each point's distance (mm) to the left or right of the canal's centre at its own height."""
    return np.abs(ras[:, 0] - canal_centre_at(ras[:, 2], canal)[:, 0])


def _along_canal(ras: np.ndarray, canal: np.ndarray) -> np.ndarray:
    """Whether each point lies between the canal's ends, or beyond them by at most ``CANAL_END_REACH_MM``."""
    return (ras[:, 2] >= canal[:, 2].min() - CANAL_END_REACH_MM) & (ras[:, 2] <= canal[:, 2].max() + CANAL_END_REACH_MM)


def in_body_region(ras: np.ndarray, canal: np.ndarray) -> np.ndarray:
    """Whether each point of ``ras`` (n x 3) lies in front of the canal within a body's reach, along the canal's
    line (see ``_along_canal``)."""
    centre = canal_centre_at(ras[:, 2], canal)
    forward = ras[:, 1] - centre[:, 1]
    across = np.abs(ras[:, 0] - centre[:, 0])
    inside = (forward > CANAL_RADIUS_MM) & (forward < BODY_DEPTH_MM) & (across < BODY_HALF_WIDTH_MM)
    return inside & _along_canal(ras, canal)


def slab_and_distance(ras: np.ndarray, planes: list[DiscPlane]) -> tuple[np.ndarray, np.ndarray]:
    """For points ``ras`` (n x 3): how many of the ``planes`` lie above each (a plane's normal points to the
    foot), and its distance to the nearest."""
    below = np.zeros(len(ras), int)
    nearest = np.full(len(ras), np.inf)
    for plane in planes:
        height = (ras - plane.centre) @ plane.normal
        below += (height > 0).astype(int)
        nearest = np.minimum(nearest, np.abs(height))
    return below, nearest


def match_in_order(overlap: np.ndarray) -> list[int | None]:
    """Match rows (pieces, head to foot) to columns (slabs, head to foot) one to one and in order, maximising the
    summed ``overlap``; a row with no overlap worth matching gets None."""
    rows, columns = overlap.shape
    best = np.zeros((rows + 1, columns + 1))
    for r in range(1, rows + 1):
        for c in range(1, columns + 1):
            best[r, c] = max(best[r - 1, c], best[r, c - 1], best[r - 1, c - 1] + overlap[r - 1, c - 1])
    matched: list[int | None] = [None] * rows
    r, c = rows, columns
    while r > 0 and c > 0:
        if best[r, c] == best[r - 1, c]:
            r -= 1
        elif best[r, c] == best[r, c - 1]:
            c -= 1
        else:
            matched[r - 1] = c - 1 if overlap[r - 1, c - 1] > 0 else None
            r, c = r - 1, c - 1
    return matched


def _one_body_tall(planes: list[DiscPlane]) -> np.ndarray:
    """Whether each slab lies between two planes and is about as tall as the median such slab (the open slabs
    at the chain's ends cannot be judged: they may hold several vertebrae)."""
    heights = np.linalg.norm(np.diff([plane.centre for plane in planes], axis=0), axis=1)
    low, high = np.array(SLAB_HEIGHT_RANGE) * float(np.median(heights))
    return np.concatenate([[False], (heights >= low) & (heights <= high), [False]])


def _pitch_is_even(planes: list[DiscPlane]) -> bool:
    """Whether each slab between two planes is within ``EVEN_PITCH_RATIO`` of its neighbours' heights (at least
    two such slabs: one alone has nothing to be compared with)."""
    heights = np.linalg.norm(np.diff([plane.centre for plane in planes], axis=0), axis=1)
    ratios = heights[1:] / heights[:-1]
    return len(ratios) > 0 and bool(np.all((ratios >= EVEN_PITCH_RATIO) & (ratios <= 1.0 / EVEN_PITCH_RATIO)))


def _remnants(overlap: np.ndarray, matched: list[int | None], one_body: np.ndarray) -> list[int]:
    """Unmatched pieces that are parts of a vertebra the walk cut in two: every slab holding some of its body
    was taken by a matched piece, and it either straddles the plane between two such slabs (``STRADDLE_SHARE``
    of its body on each side) or lies within one slab that is one body tall (a taller or open slab may hold two
    vertebrae: a disc the planes missed)."""
    taken = {s for s in matched if s is not None}
    shares = overlap / np.maximum(overlap.sum(axis=1, keepdims=True), 1.0)
    remnants = []
    for row, s in enumerate(matched):
        held = np.flatnonzero(shares[row] >= REMNANT_MIN_SHARE)
        if s is not None or not set(held) <= taken:
            continue
        straddles = len(held) == 2 and held[1] == held[0] + 1 and shares[row, held].min() >= STRADDLE_SHARE
        if straddles or (len(held) == 1 and one_body[held[0]]):
            remnants.append(row)
    return remnants


def _chain_is_consistent(overlap: np.ndarray, matched: list[int | None], one_body: np.ndarray) -> bool:
    """Whether the disc planes and the pieces tell one story: every piece matched, no piece with a large share
    of its body in a slab another piece took (a disc the planes missed), and every slab of the chain between the
    first and the last matched one about as tall as the others (a plane inside a body makes two short slabs)."""
    if any(s is None for s in matched):
        return False
    shares = overlap / overlap.sum(axis=1, keepdims=True)
    in_taken_slabs = shares[:, matched]  # row: a piece; column: the slab each piece took
    np.fill_diagonal(in_taken_slabs, 0.0)
    if (in_taken_slabs >= MERGED_BODY_SHARE).any():
        return False
    inner = range(max(min(matched), 1), min(max(matched) + 1, len(one_body) - 1))
    return bool(all(one_body[s] for s in inner))


def regroup_at_discs(
    labels: np.ndarray, sure: np.ndarray, hounsfield: np.ndarray, ras_of: np.ndarray, planes: list[DiscPlane],
    canal: np.ndarray | None, anchored_level: int | None = None, slab_level: tuple[int, int] | None = None,
    unanchored_levels: dict[int, int] | None = None,
) -> tuple[np.ndarray, dict[int, int], int | None]:
    """Seeds for the bone division, one vertebra between each two disc planes.

    Args:
        labels: the painted vertebrae (VerSe numbers) over a box of the CT's grid.
        sure: where the painted label is confident (the network's mask).
        hounsfield: the CT over the same box.
        ras_of: 4 x 4 matrix from the box's voxel indices to RAS mm.
        planes: the disc planes, head to foot.
        canal: the spinal canal's centre line (n x 3, RAS mm), or None.
        anchored_level: the level an anatomical anchor fixed, if any: the chain keeps it (else the names most
            pieces already carry).
        slab_level: (slab, level) where an anchor read along the chain itself names a slab (see
            :func:`.anchors.read_ribs_along_chain`); followed before ``anchored_level``.
        unanchored_levels: without either, the offset most pieces agree with is counted on these names of the
            pieces (each piece's level: the level the network's estimates alone give it) instead of their own.

    Returns:
        The seed label map; for each vertebra in it, the level of the piece it came from (a body the walk
        missed: its own level); and the level of slab 0 (None where nothing was regrouped). Between the canal's
        ends each confident voxel of the chain's pieces takes the name of its slab (body and arch alike: a disc
        plane carried on backwards passes between two arches; behind a thoracic canal, lowered along the arches'
        slope), except within ``SEED_MARGIN_MM`` of a plane (``LUMBAR_ARCH_SEED_MARGIN_MM`` behind a lumbar canal,
        where the facets stand upright), where the bone division finds the boundary; a body the walk missed is
        seeded from its bone. Where the planes and
        the pieces disagree (see ``_chain_is_consistent``) the seeds are the pieces' confident voxels, unchanged,
        unless ``slab_level`` names the slabs and the pitch is even (``EVEN_PITCH_RATIO``): then the planes decide.
    """
    seeds = np.where(sure, labels, 0).astype(labels.dtype)
    unchanged = {int(level): int(level) for level in np.unique(seeds) if level > 0}
    if len(planes) < 2 or canal is None or len(canal) < 2:
        return seeds, unchanged, None
    where = np.argwhere(seeds > 0)
    ras = voxels_to_ras(where, ras_of)
    slab_everywhere, plane_distance = slab_and_distance(ras, planes)
    slab = np.where(in_body_region(ras, canal), slab_everywhere, -1)  # -1: not in front of the canal
    values = seeds[tuple(where.T)]
    in_range = [int(v) for v in np.unique(values) if FIRST_CHAIN_LEVEL <= v <= LAST_CHAIN_LEVEL]
    overlap = np.array([[np.count_nonzero((values == level) & (slab == s)) for s in range(len(planes) + 1)]
                        for level in in_range], float).reshape(len(in_range), len(planes) + 1)
    # Pieces with no voxel in a body region (beyond the canal's ends) are judged by the chain's end next to them.
    judged = overlap.sum(axis=1) > 0
    pieces = [level for level, j in zip(in_range, judged) if j]
    if len(pieces) < 2:
        return seeds, unchanged, None
    overlap = overlap[judged]
    matched = match_in_order(overlap)
    one_body = _one_body_tall(planes)
    remnants = _remnants(overlap, matched, one_body)
    kept = [row for row in range(len(pieces)) if row not in remnants]
    if not _chain_is_consistent(overlap[kept], [matched[row] for row in kept], one_body):
        if slab_level is None or not _pitch_is_even(planes):
            return seeds, unchanged, None
        # The walk's pieces straddle the planes (its steps drifted by half a vertebra: a noisy scan), but the
        # planes are evenly spaced and an anchor read along them names their slabs: each piece's voxels take the
        # name of their slab, and the piece itself that of the slab holding most of it.
        matched, remnants, kept = [int(row.argmax()) for row in overlap], [], list(range(len(pieces)))
    pairs = [(pieces[row], int(matched[row])) for row in kept]
    # The chain's names: slab s is vertebra first + s. Follow an anchor read on the chain; else keep the anchored
    # level where a piece carries it, or the name of the piece next to an anchor beyond the chain (the sacrum, C2:
    # names are counted from it); else the offset most pieces agree with.
    counted = unanchored_levels or {}
    offsets = np.array([counted.get(level, level) - s for level, s in pairs])
    anchor_offsets = [level - s for level, s in pairs if level == anchored_level]
    if anchored_level is not None and not anchor_offsets:
        next_to_anchor = pairs[-1] if anchored_level > pairs[-1][0] else pairs[0] if anchored_level < pairs[0][0] else None
        anchor_offsets = [] if next_to_anchor is None else [next_to_anchor[0] - next_to_anchor[1]]
    if slab_level is not None:
        first = slab_level[1] - slab_level[0]
    elif anchor_offsets:
        first = anchor_offsets[0]
    else:
        first = int(np.bincount(offsets - offsets.min()).argmax() + offsets.min())
    along = _along_canal(ras, canal)
    chain_piece = np.isin(values, pieces)
    renamed = {level: first + s for level, s in pairs}
    renamed.update({pieces[row]: first + int(overlap[row].argmax()) for row in remnants})
    beyond = {level: level + renamed[pieces[0] if level < pieces[0] else pieces[-1]]
              - (pieces[0] if level < pieces[0] else pieces[-1]) for level in in_range if level not in renamed}
    new_values = values.copy()
    outside = chain_piece & ~along
    new_values[outside] = [renamed[int(v)] for v in values[outside]]
    inside = chain_piece & along
    arch_slab, arch_distance = _arch_slabs(ras, planes, canal, first, slab_everywhere, plane_distance)
    arch = slab < 0
    slab_here = np.where(arch, arch_slab, slab_everywhere)
    distance_here = np.where(arch, arch_distance, plane_distance)
    lumbar_arch = arch[inside] & (first + slab_here[inside] >= FIRST_LUMBAR_LEVEL)
    margin = np.where(lumbar_arch, LUMBAR_ARCH_SEED_MARGIN_MM, SEED_MARGIN_MM)
    new_values[inside] = np.where(distance_here[inside] > margin, first + slab_here[inside], 0)
    valid = ((new_values >= FIRST_CHAIN_LEVEL) & (new_values <= LAST_CHAIN_LEVEL)) | ~chain_piece
    new_values[~valid] = 0
    for level, new_level in beyond.items():
        new_values[values == level] = new_level if FIRST_CHAIN_LEVEL <= new_level <= LAST_CHAIN_LEVEL else 0
    seeds[tuple(where.T)] = new_values
    # Bodies the walk missed: slabs between the first and last matched ones.
    taken = {s for _, s in pairs}
    missed = [s for s in range(min(taken), max(taken)) if s not in taken]
    seeds = _seed_missed_vertebrae(seeds, hounsfield, ras_of, planes, canal, missed, first)
    origin = {level: level for level in unchanged if level not in in_range}
    origin.update({new_level: level for level, new_level in beyond.items()
                   if FIRST_CHAIN_LEVEL <= new_level <= LAST_CHAIN_LEVEL})
    origin.update({first + s: level for level, s in pairs if FIRST_CHAIN_LEVEL <= first + s <= LAST_CHAIN_LEVEL})
    origin.update({first + s: first + s for s in missed if FIRST_CHAIN_LEVEL <= first + s <= LAST_CHAIN_LEVEL})
    return seeds, origin, first


def _arch_slabs(
    ras: np.ndarray, planes: list[DiscPlane], canal: np.ndarray, first: int, slab: np.ndarray, distance: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The slab and plane distance of points behind the canal: ``slab`` and ``distance`` (the disc planes carried
    backwards), except where the planes lowered along a thoracic arch's slope (``THORACIC_ARCH_SLOPE``) put a
    point in a slab of T1-T10."""
    behind_mm = np.maximum(canal_centre_at(ras[:, 2], canal)[:, 1] - ras[:, 1], 0.0)
    raised = ras.copy()  # the point raised by the slope is the plane lowered by it
    raised[:, 2] += THORACIC_ARCH_SLOPE * np.maximum(behind_mm - THORACIC_ARCH_START_MM, 0.0)
    sloped_slab, sloped_distance = slab_and_distance(raised, planes)
    thoracic = np.isin(first + sloped_slab, THORACIC_ARCH_LEVELS)
    return np.where(thoracic, sloped_slab, slab), np.where(thoracic, sloped_distance, distance)


def _seed_missed_vertebrae(
    seeds: np.ndarray, hounsfield: np.ndarray, ras_of: np.ndarray, planes: list[DiscPlane], canal: np.ndarray,
    missed: list[int], first: int,
) -> np.ndarray:
    """Seed each missed slab's vertebra from its own bone: voxels of at least ``MISSED_BONE_HU`` between its two
    disc planes (and ``SEED_MARGIN_MM`` from them), within ``MISSED_REACH_MM`` of the canal's centre across."""
    missed = [s for s in missed if 0 < s < len(planes) and FIRST_CHAIN_LEVEL <= first + s <= LAST_CHAIN_LEVEL]
    if not missed:
        return seeds
    where = np.argwhere((hounsfield >= MISSED_BONE_HU) & (seeds == 0))
    ras = voxels_to_ras(where, ras_of)
    slab, distance = slab_and_distance(ras, planes)
    reach = (distance_across_canal(ras, canal) < MISSED_REACH_MM) & (distance > SEED_MARGIN_MM)
    for s in missed:
        inside = reach & (slab == s)
        seeds[tuple(where[inside].T)] = first + s
    return seeds
