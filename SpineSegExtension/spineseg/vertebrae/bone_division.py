"""Voxels from bone: the network says which vertebra, the CT says which voxels.

The network works on a coarse grid and outlines real vertebral bodies only in
part (dark marrow, thin cortex). The CT at its own resolution knows where the
bone is. Every bone voxel near the found vertebrae (with the marrow that each
axial slice's bone encloses) is given to one of them by a seeded watershed:
seeds are the network's confident voxels, and the flood runs through bone
along paths of bright bone first, so that two vertebrae meet where the bone
between them is darkest (the disc space, a facet joint gap, the thin bone of
an endplate pair). Soft tissue between two vertebrae is never crossed at the
cost of bone, and bone farther than ``BONE_REACH_MM`` from every vertebra
(ribs beyond their heads, iliac wings, the table) stays out. Contrast-filled
vessels (the aorta against the thoracic bodies) are as bright as bone but are
no bone (see :mod:`.vessels`): they are neither flooded nor seeded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image
from skimage.segmentation import watershed  # scipy's watershed_ift lets a flood leak across plateaus

from .body_chain import in_body_region, slab_and_distance, voxels_to_ras
from .disc_planes import DiscPlane
from .vessels import contrast_lumen

__all__ = ["DIVISION_BONE_HU", "BONE_REACH_MM", "DISC_GAP_MM", "SEED_PROBABILITY", "divide_bone", "division_seeds",
           "flood_cost"]

# Bone for the division: cortical and cancellous bone (osteoporotic marrow below this is recovered as the
# hole its slice's cortex encloses).
DIVISION_BONE_HU = 150.0
# Dim marrow: where a body's marrow reads below DIVISION_BONE_HU (a coarse grid of a fatty or osteoporotic spine,
# whose thin cortex never closes a ring), voxels of at least this inside the body's outline are bone too
# (muscle reads 40-70 HU). Measured on the real CTs and phantoms: docs/vertebrae-physics.md, section 8.
DIVISION_DIM_BONE_HU = 100.0
# A hole in an axial slice's bone up to this size is marrow (a lumbar body's cross-section is 12-20 cm^2).
MAX_MARROW_HOLE_MM2 = 2500.0
# Bone at most this far (mm) from a vertebra's painted voxels can join it.
BONE_REACH_MM = 8.0
# In front of the canal, this far (mm) either side of a disc plane is disc, never bone: the middle of the
# thinnest adult discs (upper thoracic, 3-5 mm), where a coarse slice mixes the endplates' bone into the disc.
DISC_GAP_MM = 2.0
# After the division, bone of the disc gap at least this bright (an endplate's cortex, not a disc's partial volume)
# takes the label found ENDPLATE_STEP_MM beyond the gap on its side (chest CT 0.732 -> 0.737, section 9).
ENDPLATE_HU = 250.0
ENDPLATE_STEP_MM = 1.0
# Seeds: voxels the network gives a vertebra with at least this probability.
SEED_PROBABILITY = 0.5
# Flood costs: Hounsfield units mapped to 1..0 over this range (brighter bone is cheaper to cross).
COST_HU_RANGE = (0.0, 1000.0)


def _dim_marrow(
    hounsfield: np.ndarray, superior_axis: int, canal_line: np.ndarray | None, ras_of: np.ndarray | None,
) -> np.ndarray:
    """The bodies' dim marrow: in each slice across ``superior_axis``, the voxels of at least
    ``DIVISION_DIM_BONE_HU`` inside the convex outline of the bright bone (>= ``DIVISION_BONE_HU``) in front of
    the canal (see :func:`.body_chain.in_body_region`), where the outline's median reads below
    ``DIVISION_BONE_HU``. A body whose marrow is bright needs none of it, and the blur around bright cortex, which
    a lower threshold would add to it, lies outside the outline.

    ``canal_line`` is the canal's centre line (RAS mm) and ``ras_of`` maps the arrays' voxel indices to RAS mm;
    without them there is no dim marrow."""
    dim = np.zeros(hounsfield.shape, bool)
    if canal_line is None or ras_of is None or len(canal_line) < 2:
        return dim
    bright = np.argwhere(hounsfield >= DIVISION_BONE_HU)
    bright = bright[in_body_region(voxels_to_ras(bright, ras_of), canal_line)]
    moved_hu = np.moveaxis(hounsfield, superior_axis, 0)
    moved_dim = np.moveaxis(dim, superior_axis, 0)
    in_plane = [axis for axis in range(3) if axis != superior_axis]
    for n in np.unique(bright[:, superior_axis]):
        outline = np.zeros(moved_hu.shape[1:], bool)
        outline[tuple(bright[bright[:, superior_axis] == n][:, in_plane].T)] = True
        if outline.sum() < 3:
            continue
        outline = convex_hull_image(outline)
        if np.median(moved_hu[n][outline]) < DIVISION_BONE_HU:
            moved_dim[n] = outline & (moved_hu[n] >= DIVISION_DIM_BONE_HU)
    return dim


def _disc_middles(
    bone: np.ndarray, disc_planes: Sequence[DiscPlane], canal_line: np.ndarray | None, ras_of: np.ndarray | None,
) -> np.ndarray:
    """The voxels of ``bone`` in front of the canal within ``DISC_GAP_MM`` of a disc plane."""
    middles = np.zeros(bone.shape, bool)
    if not disc_planes or canal_line is None or ras_of is None or len(canal_line) < 2:
        return middles
    where = np.argwhere(bone)
    ras = voxels_to_ras(where, ras_of)
    _, distance = slab_and_distance(ras, list(disc_planes))
    inside = (distance <= DISC_GAP_MM) & in_body_region(ras, canal_line)
    middles[tuple(where[inside].T)] = True
    return middles


def _bone_with_marrow(
    hounsfield: np.ndarray, spacing_mm: tuple[float, float, float], superior_axis: int, canal: np.ndarray,
    dim_marrow: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Bone, and the marrow it encloses: the holes up to ``MAX_MARROW_HOLE_MM2`` that each slice across
    ``superior_axis`` encloses, kept where, along the head-foot axis, they run into bone at both ends.

    A body's marrow is enclosed by its cortex in every slice and capped by its endplates; a disc that an
    endplate's rim encloses in one slice opens into the disc space above or below, and the chest that a rib
    cage encloses is too large. A hole holding a ``canal`` voxel is never marrow (where the arch closes its
    ring, the spinal canal is a hole too)."""
    bone = (hounsfield >= DIVISION_BONE_HU) | dim_marrow
    holes = np.zeros_like(bone)
    in_plane = [s for axis, s in enumerate(spacing_mm) if axis != superior_axis]
    largest = MAX_MARROW_HOLE_MM2 / (in_plane[0] * in_plane[1])
    moved_bone = np.moveaxis(bone, superior_axis, 0)
    moved_holes = np.moveaxis(holes, superior_axis, 0)
    moved_canal = np.moveaxis(canal, superior_axis, 0)
    for n in range(moved_bone.shape[0]):
        found, count = ndimage.label(ndimage.binary_fill_holes(moved_bone[n]) & ~moved_bone[n])
        if count:
            small = np.bincount(found.ravel(), minlength=count + 1) <= largest
            small[np.unique(found[moved_canal[n]])] = False
            small[0] = False
            moved_holes[n] = small[found]
    # Peel hole voxels whose head-foot neighbour is neither bone nor hole until none is left: what remains
    # is capped by bone at both ends.
    while True:
        closed = moved_bone | moved_holes
        capped = moved_holes.copy()
        capped[1:] &= closed[:-1]
        capped[:-1] &= closed[1:]
        capped[0] = capped[-1] = False
        if np.array_equal(capped, moved_holes):
            break
        moved_holes[...] = capped
    return bone, holes


def division_seeds(labels: np.ndarray, probability: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """Where each vertebra's flood starts: ``seeds`` where given (the chain of bodies), else the network's
    confident voxels (``SEED_PROBABILITY``), labelled with their vertebra."""
    if seeds is not None:
        return seeds
    return np.where((probability >= SEED_PROBABILITY) & (labels > 0), labels, 0)


def flood_cost(hounsfield: np.ndarray) -> np.ndarray:
    """The cost of flooding through each voxel: Hounsfield units mapped to 1..0 over ``COST_HU_RANGE``, so that
    a flood crosses bright bone first and two floods meet where the bone is darkest."""
    low, high = COST_HU_RANGE
    return np.clip((high - hounsfield) / (high - low), 0.0, 1.0).astype(np.float32)


def divide_bone(
    labels: np.ndarray, probability: np.ndarray, hounsfield: np.ndarray, spacing_mm: tuple[float, float, float],
    superior_axis: int, canal: np.ndarray | None = None, seeds: np.ndarray | None = None,
    canal_line: np.ndarray | None = None, ras_of: np.ndarray | None = None,
    disc_planes: Sequence[DiscPlane] = (), not_vertebra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The label map that gives each bone voxel near the painted vertebrae to one of them.

    Args:
        labels: painted vertebrae (VerSe numbers) on the CT's grid (or a box of it).
        probability: the probability of each voxel's painted label.
        hounsfield: the CT on the same voxels.
        spacing_mm: voxel size along the three axes.
        superior_axis: the array axis closest to head-foot (slices across it are axial).
        canal: voxels of the spinal canal's centre line (see :mod:`.frame`), never bone; None where not found.
        seeds: where each flood starts (VerSe numbers, 0 elsewhere); by default the network's confident voxels
            (see :func:`division_seeds`, and :func:`.body_chain.regroup_at_discs` for seeds placed by the chain
            of bodies).
        canal_line: the canal's centre line (RAS mm, n x 3) and ``ras_of`` the 4 x 4 matrix from voxel indices
            to RAS mm: where given, the bodies' dim marrow is bone too (see ``_dim_marrow``).
        disc_planes: with ``canal_line``, the disc planes (:mod:`.disc_planes`) whose middles, in front of the
            canal, the flood never crosses (``DISC_GAP_MM``); their endplate-bright voxels then join the body on
            their side (``ENDPLATE_HU``).
        not_vertebra: bone known to belong to no vertebra (the ribs beside the rib-bearing levels): it floods
            too, against the vertebrae, and what it reaches (a rib up to its joints with the spine) stays out.

    Returns:
        A new label map: the watershed of the bone from the network's confident voxels, plus those confident
        voxels themselves where the CT shows no bone (dark marrow on an open slice); and the bone it divided
        (with the marrow its slices enclose). Contrast lumens are neither (the network and the chain of bodies
        may have painted the aorta that touches a body).
    """
    lumen = contrast_lumen(hounsfield, spacing_mm, superior_axis)
    confident = (probability >= SEED_PROBABILITY) & (labels > 0) & ~lumen
    seeds = np.where(lumen, 0, division_seeds(labels, probability, seeds)).astype(np.int32)
    if not seeds.any():
        return labels.copy(), np.zeros(labels.shape, bool)
    elsewhere = int(seeds.max()) + 1  # the flood of bone that is no vertebra's
    if not_vertebra is not None:
        seeds[not_vertebra & (seeds == 0) & ~lumen] = elsewhere
    near = ndimage.distance_transform_edt(~(confident | (seeds > 0)), sampling=spacing_mm) <= BONE_REACH_MM
    canal = np.zeros(labels.shape, bool) if canal is None else canal
    dim_marrow = _dim_marrow(hounsfield, superior_axis, canal_line, ras_of)
    bone, marrow = _bone_with_marrow(hounsfield, spacing_mm, superior_axis, canal, dim_marrow)
    # A body's marrow joins whole where any of it is near (its middle lies farther from the cortex seen).
    pieces, _ = ndimage.label(marrow)
    near_marrow = np.isin(pieces, np.unique(pieces[near & marrow])) & marrow
    bone = ((bone & near) | near_marrow) & ~canal & ~lumen
    middles = _disc_middles(bone, disc_planes, canal_line, ras_of)
    bone &= ~middles
    flooded = watershed(flood_cost(hounsfield), seeds, mask=bone | (seeds > 0))
    divided = np.where(flooded == elsewhere, 0, flooded).astype(labels.dtype)
    _endplates_back(divided, middles & (hounsfield >= ENDPLATE_HU), disc_planes, ras_of)
    return divided, bone


def _endplates_back(
    divided: np.ndarray, bright: np.ndarray, disc_planes: Sequence[DiscPlane], ras_of: np.ndarray,
) -> None:
    """Give each ``bright`` voxel of the disc gap the label found just beyond the gap on its own side of its
    nearest plane (in place). The gap bars the flood; an endplate that a plane a millimetre off cuts into still
    belongs to the body on its side, and the disc itself (darker) stays no one's."""
    where = np.argwhere(bright)
    if not len(where):
        return
    ras = voxels_to_ras(where, ras_of)
    heights = np.stack([(ras - plane.centre) @ plane.normal for plane in disc_planes], axis=1)
    nearest = np.argmin(np.abs(heights), axis=1)
    height = heights[np.arange(len(ras)), nearest]
    normals = np.array([plane.normal for plane in disc_planes])[nearest]
    beyond = ras + normals * (np.sign(height) * (DISC_GAP_MM + ENDPLATE_STEP_MM) - height)[:, None]
    ijk = np.rint(voxels_to_ras(beyond, np.linalg.inv(ras_of))).astype(int)  # the inverse maps RAS to voxels
    inside = np.all((ijk >= 0) & (ijk < divided.shape), axis=1)
    found = np.zeros(len(ijk), divided.dtype)
    found[inside] = divided[tuple(ijk[inside].T)]
    divided[tuple(where[found > 0].T)] = found[found > 0]
