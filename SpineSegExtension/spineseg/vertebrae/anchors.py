"""Anatomical anchors: what in the image fixes which levels a run of found vertebrae holds.

The network's regressed positions say roughly where along the spine a run
lies, but on unfamiliar anatomy the whole run can be off by a level or two.
Some vertebrae can be recognised from the anatomy around them, and each one
so recognised fixes the count:

* **sacrum**: the foot-most pieces, joined left and right to the iliac wings
  (the sacro-iliac joints), so that bone runs without a break from the
  midline far out on both sides, over most of a vertebra's height from the
  piece's top (bone judged against the scan's own vertebrae, so that the
  scan's scale, brightness and sampling do not move the reading);
* **last rib**: the last vertebra whose bone continues laterally into a rib
  (bone reaching far beyond any transverse process), with a vertebra without
  ribs below it;
* **C7/T1**: the first rib-bearing vertebra below one without ribs;
* **C2**: the vertebra whose dens reaches up into the ring of the one above.

Everything is measured on the working grid (axes R, A, S; isotropic
``spacing_mm``) in axial slices, from the image in Hounsfield units and the
found vertebrae's masks: a vertebra's bone in a slice is seeded by its mask,
and joints up to ``JOINT_GAP_MM`` wide are bridged, so a rib or an ilium
counts as continuing from it even where the joint reads as a dark gap.
Distances are from the vertebra's own midline (its mask's mean R coordinate in
the slice).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from ..geometry import Grid, resample_to
from ..volume import Volume, VolumeKind
from .body_chain import slab_and_distance
from .disc_planes import DiscPlane
from .traversal import MASK_PROBABILITY, FoundVertebra

__all__ = [
    "Anchor", "PieceAnatomy", "AnchorFindings", "slab_ranges", "pelvis_bone_hu", "measure_piece", "find_anchors",
    "RibReading", "read_ribs_along_chain",
]


class Anchor(str, Enum):
    """An anatomical landmark that fixes the level of the vertebra it is found on; by trust, most first."""

    SACRUM = "sacrum"
    C2 = "C2"
    LAST_RIB = "last rib"
    FIRST_RIB = "C7/T1"


# Bone in the working grid (HU). Ribs and the ilium read 150-300 HU on a 3 mm grid (partial volume);
# contrast-filled vessels and kidneys reach this too, which is why only bone joined to the vertebra counts.
ANCHOR_BONE_HU = 150.0
# Gaps up to this wide between a vertebra's bone and the next bone are joints (costotransverse,
# sacro-iliac), bridged when following the bone outwards.
JOINT_GAP_MM = 3.0
# Bone is followed outwards from a vertebra only this far from its midline and beyond, so that the way
# out never runs through the column itself to another vertebra's ribs.
COLUMN_HALF_WIDTH_MM = 15.0
# Transverse processes end within about 50 mm of the midline (the widest, L3's, in large adults); a rib
# joined to the vertebra carries its bone further out than this ...
RIB_REACH_MM = 62.0
# ... while falling (the lowest ribs fall steeply): the bone is followed this far below the vertebra's slab,
# there only this far out and beyond, where its own rib runs rather than the next vertebra's rib head and neck.
RIB_DROP_MM = 15.0
RIB_DROP_LATERAL_MM = 40.0
# The sacrum with the iliac wings, read so that neither the scan's scale, its brightness nor its sampling moves the
# reading (issue 32): in this share of the head-most axial slices of the piece's own slab, as many as one vertebra
# of this scan spans (a share of the patient's own vertebra height, not a height in mm), bone joined to the piece
# reaches this far out on both sides. The sacro-iliac joints run from the top of the sacrum down over more than a
# vertebra's height, so a sacrum found whole reads like its head piece. The wings reach 77-100 mm from the midline
# on the phantoms and 105-140 mm on the real CT, lumbar transverse processes at most 48 mm: 62 mm lies inside that
# gap at +-20 % scale. The sacrum's head piece reads 0.75-1.0, rib-bearing vertebrae at most 0.5; an L5 touches the
# alae or the iliac crest in the lowest slices of its slab (up to 0.55 where it holds the top of S1; see
# ``find_anchors``). Measured in docs/vertebrae-physics.md, section 5.
PELVIS_REACH_MM = 62.0
PELVIS_SHARE = 0.6
# A share this large is the sacrum's beyond doubt.
CLEAR_PELVIS_SHARE = 0.7
# Bone, for the pelvis: this share of the scan's own vertebral bone (the median HU inside the found pieces' masks),
# so that a scan 15 % darker or brighter reads alike; the thin bone of the alae and the sacro-iliac joints, averaged
# with the joint space on coarse grids, stays above it where a fixed 150 HU lost it. Never below soft tissue.
PELVIS_BONE_FRACTION = 0.6
MIN_PELVIS_BONE_HU = 80.0
# A slab thinner than this (mm) tells nothing (a vertebra cut by the scan's end).
MIN_SLAB_MM = 6.0
# C2's dens: at least this much of its mask (mm^3) lies inside the height of the vertebra above, within
# this distance (mm) of that vertebra's axis, where the vertebra above itself has almost none (its ring's hole).
DENS_MIN_MM3 = 150.0
DENS_RADIUS_MM = 9.0
# The sacrum is found as at most this many pieces (see levels.MAX_SACRUM_PIECES).
SACRUM_PIECES = 3


@dataclass(frozen=True)
class PieceAnatomy:
    """What the anatomy around one found piece says (see ``measure_piece``).

    Attributes:
        slab_mm: height of the axial slices that belong to the piece (where it holds most mask voxels).
        rib_reach_mm: how far out from its midline bone joined to it reaches, on its wider side, following
            the bone down to ``RIB_DROP_MM`` below its slab.
        pelvis_share: the share of its slab's head-most slices (one vertebra's height) in which bone joined to it
            reaches ``PELVIS_REACH_MM`` out on both sides.
        at_scan_end: its slab reaches the scan's head end: its upper part, where ribs attach, may lie outside.
    """

    slab_mm: float
    rib_reach_mm: float
    pelvis_share: float
    at_scan_end: bool = False

    @property
    def readable(self) -> bool:
        return self.slab_mm >= MIN_SLAB_MM

    @property
    def pelvis(self) -> bool:
        return self.readable and self.pelvis_share >= PELVIS_SHARE

    @property
    def ribs(self) -> bool | None:
        """Whether it carries ribs; None where that cannot be told (a thin slab, or cut by the scan's end)."""
        if not self.readable or (self.at_scan_end and self.rib_reach_mm < RIB_REACH_MM):
            return None
        return self.rib_reach_mm >= RIB_REACH_MM


# C2 is followed by five vertebrae without ribs (C3-C7) before the first rib-bearing one (T1).
C2_TO_FIRST_RIB = 5


@dataclass(frozen=True)
class AnchorFindings:
    """Anchors found on a head-to-foot run of pieces.

    Attributes:
        ribs: per piece, whether it carries ribs (None: its slab is too thin to tell, or it is the sacrum).
        sacrum: index of the first (head-most) piece of the sacrum, if found.
        dens: index of C2, if its dens was found reaching into the piece above.
    """

    ribs: list[bool | None]
    sacrum: int | None = None
    dens: int | None = None

    def anchors(self) -> dict[Anchor, int]:
        """Each anchor found and the index of the piece whose level it fixes, most trusted first.

        The last rib is the last of two rib-bearing pieces with two pieces without ribs right below them (or
        one, the run's last piece); C7/T1 the first of two rib-bearing pieces with two without ribs right above
        (neither across the sacrum).
        Rib-bearing vertebrae are one unbroken run (T1-T12): readings that break it into several runs
        contradict the anatomy, and then neither rib anchor is used. Nor is a C2 with ribs on one of the
        ``C2_TO_FIRST_RIB`` pieces below it (C3-C7 carry none).
        """
        found: dict[Anchor, int] = {}
        if self.sacrum is not None:
            found[Anchor.SACRUM] = self.sacrum
        rib_pieces = [i for i, ribs in enumerate(self.ribs) if ribs is True]
        if self.dens is not None and not any(self.dens < i <= self.dens + C2_TO_FIRST_RIB for i in rib_pieces):
            found[Anchor.C2] = self.dens
        if rib_pieces and any(self.ribs[i] is False for i in range(rib_pieces[0], rib_pieces[-1])):
            return found  # ribs, then none, then ribs again: the rib readings contradict each other
        ribs = self.ribs

        def two(start: int, value: bool) -> bool:  # pieces start and start + 1 both read ``value``
            return start >= 0 and ribs[start:start + 2] == [value, value]

        # A transition counts only with two readings on each side of it (one may be a vertebra cut by the scan),
        # except below the last rib where the run's last piece reads none: its upper part, where ribs attach,
        # is in view (a piece the scan's head end cuts reads None instead).
        def none_below(i: int) -> bool:
            return two(i + 1, False) or (i + 2 == len(ribs) and ribs[i + 1] is False)

        last = [i for i in range(len(ribs)) if two(i - 1, True) and none_below(i)]
        first = [i for i in range(len(ribs)) if two(i - 2, False) and two(i, True)]
        if last:
            found[Anchor.LAST_RIB] = last[-1]
        if first:
            found[Anchor.FIRST_RIB] = first[0]
        return found


def slab_ranges(found: Sequence[FoundVertebra], depth: int) -> list[np.ndarray]:
    """Per piece, the axial slices (k indices) where its mask holds more voxels than any other piece's."""
    counts = np.zeros((len(found), depth))
    for index, vertebra in enumerate(found):
        per_slice = (vertebra.probability > MASK_PROBABILITY).sum(axis=(0, 1))
        k0 = int(vertebra.corner[2])
        low, high = max(k0, 0), min(k0 + len(per_slice), depth)
        if high > low:
            counts[index, low:high] = per_slice[low - k0:high - k0]
    owner = np.where(counts.max(axis=0) > 0, counts.argmax(axis=0), -1)
    return [np.flatnonzero(owner == index) for index in range(len(found))]


def _piece_mask(vertebra: FoundVertebra, shape: tuple[int, int, int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The piece's mask and the slices of the working grid it covers (its patch clipped to the grid)."""
    corner = np.asarray(vertebra.corner, dtype=int)
    size = np.array(vertebra.probability.shape)
    low, high = np.maximum(corner, 0), np.minimum(corner + size, shape)
    inside = tuple(slice(int(a - c), int(b - c)) for a, b, c in zip(low, high, corner))
    return vertebra.probability[inside] > MASK_PROBABILITY, tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _joined_bone(bone: np.ndarray, seed: np.ndarray, gap_voxels: int) -> np.ndarray:
    """The voxels of ``bone`` joined to ``seed`` across gaps of up to ``gap_voxels`` (2D or 3D)."""
    bridged = ndimage.binary_dilation(bone | seed, iterations=gap_voxels)
    components, _ = ndimage.label(bridged, structure=np.ones((3,) * bone.ndim))
    return np.isin(components, np.unique(components[seed])) & bone


def lateral_reach(
    hounsfield: np.ndarray, seed: np.ndarray, spacing_mm: float, bone_hu: float
) -> tuple[float, float]:
    """How far (mm, towards R and towards L) bone joined to ``seed`` reaches from the seed's midline in one slice.

    Args:
        hounsfield: one axial slice (axes R, A) in HU.
        seed: the vertebra's mask in that slice.
        spacing_mm: pixel size.
        bone_hu: the least HU that counts as bone.
    """
    if not seed.any():
        return 0.0, 0.0
    gap = max(1, int(round(JOINT_GAP_MM / spacing_mm)))
    columns = np.flatnonzero(_joined_bone((hounsfield >= bone_hu) | seed, seed, gap).any(axis=1))
    midline = float(np.nonzero(seed)[0].mean())
    return float(columns.max() - midline) * spacing_mm, float(midline - columns.min()) * spacing_mm


def pelvis_bone_hu(hounsfield: np.ndarray, found: Sequence[FoundVertebra]) -> float:
    """The least HU that counts as bone when following a piece out to the iliac wings: ``PELVIS_BONE_FRACTION`` of
    the median HU inside the found pieces' masks (the scan's own vertebral bone), at least ``MIN_PELVIS_BONE_HU``."""
    values = []
    for vertebra in found:
        mask, where = _piece_mask(vertebra, hounsfield.shape)
        values.append(hounsfield[where][mask])
    inside = np.concatenate(values) if values else np.zeros(0)
    if len(inside) == 0:
        return MIN_PELVIS_BONE_HU
    return max(MIN_PELVIS_BONE_HU, PELVIS_BONE_FRACTION * float(np.median(inside)))


def measure_piece(
    hounsfield: np.ndarray, found: Sequence[FoundVertebra], index: int, slab: np.ndarray, spacing_mm: float,
    pelvis_bone: float, pelvis_slices: int,
) -> PieceAnatomy:
    """Rib and pelvis evidence around piece ``index`` of ``found``, from its ``slab`` (k indices) of the grid.

    Ribs: bone joined to the piece (its mask, and bone beyond ``COLUMN_HALF_WIDTH_MM`` from its midline that no
    other piece holds) is followed in 3D from its slab down to ``RIB_DROP_MM`` below it (there only beyond
    ``RIB_DROP_LATERAL_MM``). Pelvis: slice by slice in the head-most ``pelvis_slices`` of its slab, with
    ``pelvis_bone`` HU as bone (see ``pelvis_bone_hu`` and ``lateral_reach``).
    """
    if len(slab) == 0:
        return PieceAnatomy(0.0, 0.0, 0.0)
    shape = hounsfield.shape
    mask, where = _piece_mask(found[index], shape)
    k_low, k_high = int(slab.min()), int(slab.max()) + 1
    drop = int(round(RIB_DROP_MM / spacing_mm))
    window = slice(max(k_low - drop, 0), k_high)
    seed = np.zeros(shape[:2] + (window.stop - window.start,), dtype=bool)
    k_mask = np.arange(where[2].start, where[2].stop)
    in_window = (k_mask >= window.start) & (k_mask < window.stop)
    seed[where[0], where[1], k_mask[in_window] - window.start] = mask[:, :, in_window]
    seed[:, :, : max(k_low - window.start, 0)] = False  # the piece starts the way out from its own slab
    own = seed.copy()
    midline = float(np.nonzero(own)[0].mean()) if own.any() else (shape[0] - 1) / 2
    others = np.zeros_like(seed)
    for other_index, other in enumerate(found):
        if other_index == index:
            continue
        other_mask, other_where = _piece_mask(other, shape)
        k_other = np.arange(other_where[2].start, other_where[2].stop)
        keep = (k_other >= window.start) & (k_other < window.stop)
        if keep.any():
            others[other_where[0], other_where[1], k_other[keep] - window.start] |= other_mask[:, :, keep]
    lateral = np.abs(np.arange(shape[0]) - midline)[:, None, None] * spacing_mm
    bone = (hounsfield[:, :, window] >= ANCHOR_BONE_HU) & ~others & (lateral >= COLUMN_HALF_WIDTH_MM)
    bone[:, :, : k_low - window.start] &= lateral >= RIB_DROP_LATERAL_MM
    gap = max(1, int(round(JOINT_GAP_MM / spacing_mm)))
    joined = _joined_bone(bone | own, own, gap)
    rows = np.flatnonzero(joined.any(axis=(1, 2)))
    rib_reach = float(max(rows.max() - midline, midline - rows.min())) * spacing_mm if len(rows) else 0.0
    both_sides = [
        min(lateral_reach(hounsfield[:, :, k], own[:, :, k - window.start], spacing_mm, pelvis_bone))
        >= PELVIS_REACH_MM for k in slab[-pelvis_slices:]
    ]
    at_end = k_high >= shape[2]  # cut at the head end, where its ribs attach
    return PieceAnatomy(len(slab) * spacing_mm, rib_reach, float(np.mean(both_sides)), at_end)


def _find_dens(found: Sequence[FoundVertebra], spacing_mm: float) -> int | None:
    """Index of the piece whose mask rises into the ring of the piece above (C2's dens inside C1), if any."""
    for index in range(1, len(found)):
        above, below = found[index - 1], found[index]
        above_mask = above.probability > MASK_PROBABILITY
        below_mask = below.probability > MASK_PROBABILITY
        above_voxels = np.argwhere(above_mask) + above.corner
        below_voxels = np.argwhere(below_mask) + below.corner
        if len(above_voxels) == 0 or len(below_voxels) == 0:
            continue
        axis = above_voxels[:, :2].mean(axis=0)
        bottom, top = np.percentile(above_voxels[:, 2], [10, 90])
        radius = DENS_RADIUS_MM / spacing_mm
        inside = below_voxels[(below_voxels[:, 2] >= bottom) & (below_voxels[:, 2] <= top)
                              & (np.hypot(*(below_voxels[:, :2] - axis).T) <= radius)]
        ring_hole = above_voxels[(np.hypot(*(above_voxels[:, :2] - axis).T) <= radius)]
        if len(inside) * spacing_mm**3 >= DENS_MIN_MM3 and len(ring_hole) < 0.5 * len(inside):
            return index
    return None


def find_anchors(
    hounsfield: np.ndarray, found: Sequence[FoundVertebra], spacing_mm: float
) -> tuple[AnchorFindings, list[PieceAnatomy]]:
    """Look for the sacrum, the ribs and the dens around a head-to-foot run of pieces on the working grid.

    The sacrum is the head-most of the foot-end pieces (among the last ``SACRUM_PIECES``) joined to the iliac
    wings, below a piece that is not, unless the piece below it is joined to them in a larger share of its slices
    (then the head-most one is an L5 touching them). Ribs are not judged on the sacrum nor on the piece right above
    it, whose bone may run into the alae and the iliac crest.

    Args:
        hounsfield: the working-grid CT in HU (axes R, A, S).
        found: the pieces head to foot.
        spacing_mm: the working grid's voxel size.

    Returns:
        The anchors and the measurements per piece they were read from.
    """
    if not found:
        return AnchorFindings([]), []
    slabs = slab_ranges(found, hounsfield.shape[2])
    bone = pelvis_bone_hu(hounsfield, found)
    vertebra_slices = max(1, int(round(np.median([len(slab) for slab in slabs]))))  # one vertebra of this scan
    anatomy = [measure_piece(hounsfield, found, index, slab, spacing_mm, bone, vertebra_slices)
               for index, slab in enumerate(slabs)]
    sacrum = None
    clear_pelvis = any(a.readable and a.pelvis_share >= CLEAR_PELVIS_SHARE for a in anatomy[-SACRUM_PIECES:])
    for index in range(len(found) - 1, max(len(found) - 1 - SACRUM_PIECES, 0), -1):
        if anatomy[index].pelvis and not anatomy[index - 1].pelvis:
            sacrum = index
            break
        # A foot-end piece that does not touch the wings ends the search (the scan ends above the pelvis),
        # unless a piece among the last few is unmistakably joined to them: then it is the lower sacrum,
        # below the sacro-iliac joints. A fragment of the sacrum that only touches the wings (a share too small for
        # `pelvis`) is looked past.
        if anatomy[index].pelvis_share == 0 and not clear_pelvis:
            break
    # An L5 that holds a little of S1 (the walk's piece reached into it) or sits deep between the iliac crests
    # can touch the wings in as large a share of its slices as the sacrum's head piece at its least; the S1 piece
    # below it is joined to them in a larger share (the sacro-iliac joints). Of two such pieces, the upper one with
    # the smaller share is L5.
    if sacrum is not None and sacrum + 1 < len(found) and anatomy[sacrum + 1].pelvis \
            and anatomy[sacrum].pelvis_share < anatomy[sacrum + 1].pelvis_share:
        sacrum += 1
    pelvic = len(found) if sacrum is None else sacrum - 1
    ribs = [a.ribs if index < pelvic else None for index, a in enumerate(anatomy)]
    return AnchorFindings(ribs, sacrum, _find_dens(found, spacing_mm)), anatomy


# Ribs read along the chain of vertebrae (the disc planes, :mod:`.disc_planes`), on the CT at its own resolution
# resampled to this isotropic grid (mm), aligned with the RAS axes.
RIB_GRID_MM = 1.5
# Rib bone: cortex and marrow of adult ribs (contrast-filled vessels beside the spine reach it too, but no
# vessel runs from the costotransverse joints out around the chest).
RIB_BONE_HU = 150.0
# The bone around the spine where ribs are looked for, measured from the spinal canal's centre at each height:
# this far out to each side (beyond ``RIB_MIN_REACH_MM``, so that a rib's reach is seen whole) ...
RIB_SEARCH_MM = 90.0
# ... and this far forwards (negative: backwards; ribs run backwards from the joints before they turn forwards).
RIB_FORWARD_MM = (-45.0, 40.0)
# A rib's root: the bone of its neck between the costotransverse joint and its tubercle, this far out from the
# canal's centre. On the chest CT the twelve ribs a side cross this band within the slab of their own vertebra
# (ribs 2-9, whose heads straddle the disc above, in its upper part); nearer the spine the transverse processes
# and the heads join them to the vertebrae, farther out the lower ribs fall into the slab below.
RIB_ROOT_MM = (30.0, 36.0)
# ... and at most this far in front of the canal's centre (the joints lie beside and behind it: the chest CT's
# roots lie 36 mm behind to 2 mm in front; in front of the body, vessels and the pleura's calcifications).
RIB_ROOT_FORWARD_MM = 15.0
# A root may straddle a disc plane (the heads of ribs 2-9 rise to the disc above their vertebra, with which
# they articulate too); it belongs to the lowest slab that holds at least this share of it (on the chest CT the
# upper ribs' roots put 26-54 % of their bone in their own slab, the lower ribs' at most 13 % in the one below).
ROOT_SLAB_SHARE = 0.3
# A root smaller than this (mm^3) is a bony fleck, not a rib's cross-section (about 50 mm^2 over 6 mm); one
# taller than this (mm) is a plate of bone, the sacrum's ala and the ilium (rib roots: 10-16 mm, that of a
# phantom's sacrum 50 mm).
MIN_RIB_ROOT_MM3 = 60.0
MAX_RIB_ROOT_MM = 30.0
# A rib carries its bone at least this far out from the canal's centre (the first rib, the shortest, 62-70 mm
# on the chest CT and the phantoms); a transverse process ends within about 55 mm (the widest, L3's). Bone that
# several roots share is divided between them along its thickest paths (a watershed on its distance to soft
# tissue), so that a transverse process touching a rib keeps only its own short bone up to the thin contact, and
# two ribs touching each other both count.
RIB_MIN_REACH_MM = 60.0
# Twelve pairs of ribs: T1 carries the first, T12 the last.
FIRST_RIB_LEVEL, LAST_RIB_LEVEL, RIB_PAIRS = 8, 19, 12
# Ribs are read this share of a slab's height (the median between the planes) beyond the first and the last
# plane. Below the last plane that is the upper part of the next vertebra, where its ribs would attach: it is
# read as rib-bearing or not where the scan holds it. Above the first plane nothing is read: the vertebra there
# attaches its ribs in its upper part, which may lie beyond a disc the planes missed (on the shared real CT the
# slab above the first plane holds L1 and T12).
END_SLAB_IN_VIEW = 0.6
# Rib-like bone this many slabs or more below the last rib is the pelvis (the iliac wings beside L4-S1, five
# lumbar vertebrae below T12), not a rib; nearer, it contradicts the ribs above.
PELVIS_SLABS_BELOW = 4


@dataclass(frozen=True)
class RibReading:
    """Which vertebrae of the chain carry ribs, side by side (see ``read_ribs_along_chain``).

    Slab ``s`` lies between disc planes ``s - 1`` and ``s`` (slab 0 above the first plane, the last below the
    last plane).

    Attributes:
        right, left: the slabs whose vertebra carries a rib on that side, head to foot.
        in_view: the first and the last slab read (slab 1, and the slab below the last plane where the scan holds
            enough of it; see ``END_SLAB_IN_VIEW``).
    """

    right: tuple[int, ...]
    left: tuple[int, ...]
    in_view: tuple[int, int]

    def _side_ends(self, ribs: tuple[int, ...]) -> tuple[int | None, int | None, str | None]:
        """One side's first and last rib-bearing slab where the slab beyond it is in view and rib-free (else None),
        or why the side's readings contradict the anatomy.

        The ribs are the head-most run of rib-bearing slabs; one slab alone counts only where the scan's head end
        cuts the run (an iliac crest beside L4 or L5 below rib-free vertebrae reads as one).
        """
        if not ribs:
            return None, None, None
        top = bottom = ribs[0]
        for slab in ribs[1:]:
            if slab == bottom + 1:
                bottom = slab
            elif slab - bottom < PELVIS_SLABS_BELOW:
                return None, None, "ribs, then none, then ribs again"
            else:
                break  # the pelvis
        if top == bottom and top > self.in_view[0]:
            return None, None, None
        first = top if top - 1 >= self.in_view[0] else None
        last = bottom if bottom + 1 <= self.in_view[1] else None
        return first, last, None

    def judge(self) -> tuple[dict[Anchor, int], str | None]:
        """The rib anchors (the slab of T1 and of T12) the readings agree on, or none and why they contradict.

        A side whose first and last rib are both in view counts its ribs: twelve fix both anchors. A side that
        counts otherwise may have lost a rib (two ribs touching) and must agree with such a side on at least one
        end. Without a side that counts twelve, every side's first rib (and every side's last rib) must be on one
        slab, and where both are in view they must lie eleven slabs apart.
        """
        ends = []
        for side, ribs in (("right", self.right), ("left", self.left)):
            first, last, problem = self._side_ends(ribs)
            if problem:
                return {}, f"on the {side}: {problem}"
            ends.append((first, last))
        counted = {(first, last) for first, last in ends
                   if first is not None and last is not None and last - first + 1 == RIB_PAIRS}
        if len(counted) > 1:
            return {}, "the two sides count twelve ribs on different vertebrae"
        if counted:
            first, last = counted.pop()
            for f, l in ends:
                agree = [end == value for end, value in ((f, first), (l, last)) if end is not None]
                if agree and not any(agree):
                    return {}, "the sides disagree on the first and the last rib"
            return {Anchor.FIRST_RIB: first, Anchor.LAST_RIB: last}, None
        firsts = {f for f, _ in ends if f is not None}
        lasts = {l for _, l in ends if l is not None}
        if len(firsts) > 1 or len(lasts) > 1:
            return {}, "the sides disagree on the first or the last rib"
        anchors = {anchor: min(slabs) for anchor, slabs in ((Anchor.FIRST_RIB, firsts), (Anchor.LAST_RIB, lasts))
                   if slabs}
        if len(anchors) == 2 and anchors[Anchor.LAST_RIB] - anchors[Anchor.FIRST_RIB] + 1 != RIB_PAIRS:
            return {}, "the ribs between the first and the last are not twelve"
        return anchors, None

    def slab_level(self) -> tuple[int, int] | None:
        """(slab, level) of the most trusted rib anchor the readings agree on, or None."""
        anchors, _ = self.judge()
        if Anchor.LAST_RIB in anchors:
            return anchors[Anchor.LAST_RIB], LAST_RIB_LEVEL
        if Anchor.FIRST_RIB in anchors:
            return anchors[Anchor.FIRST_RIB], FIRST_RIB_LEVEL
        return None


def _rib_search_grid(volume: Volume, canal: np.ndarray, planes: Sequence[DiscPlane]) -> tuple[Grid, tuple[int, int]]:
    """An RAS-aligned grid of ``RIB_GRID_MM`` around the chain, within the scan: ``RIB_SEARCH_MM`` to each side
    of the canal, ``RIB_FORWARD_MM`` around it, ``END_SLAB_IN_VIEW`` of a slab above the first plane and two slabs
    below the last (the lowest ribs fall steeply); and the first and the last slab read (see
    ``RibReading.in_view``)."""
    heights = np.array([plane.centre[2] for plane in planes])
    slab_mm = float(np.median(np.abs(np.diff(heights))))
    low = np.array([canal[:, 0].min() - RIB_SEARCH_MM, canal[:, 1].min() + RIB_FORWARD_MM[0],
                    heights.min() - 2 * slab_mm])
    high = np.array([canal[:, 0].max() + RIB_SEARCH_MM, canal[:, 1].max() + RIB_FORWARD_MM[1],
                     heights.max() + END_SLAB_IN_VIEW * slab_mm])
    ends = np.meshgrid(*[[0, n - 1] for n in volume.shape], indexing="ij")
    corners = volume.ijk_to_ras(np.array(ends).reshape(3, -1).T)
    last = len(planes) if corners[:, 2].min() <= heights.min() - END_SLAB_IN_VIEW * slab_mm else len(planes) - 1
    low, high = np.maximum(low, corners.min(axis=0)), np.minimum(high, corners.max(axis=0))
    shape = tuple(int(n) for n in np.maximum(np.floor((high - low) / RIB_GRID_MM) + 1, 1))
    affine = np.eye(4)
    affine[:3, :3] *= RIB_GRID_MM
    affine[:3, 3] = low
    return Grid(shape, affine), (1, last)


def read_ribs_along_chain(volume: Volume, canal: np.ndarray, planes: Sequence[DiscPlane]) -> RibReading:
    """Which vertebrae of the chain carry ribs: each rib is read where it leaves the spine, by its root.

    Bone (>= ``RIB_BONE_HU``) beside and behind the spine (``RIB_SEARCH_MM``, ``RIB_FORWARD_MM`` from the
    canal's centre, at each height) falls into pieces; a piece's roots are its bone in the band
    ``RIB_ROOT_MM`` out from the canal. Where several roots share a piece, the piece is divided between them by a
    watershed on the bone's depth (its distance to soft tissue), so that each root keeps the bone its own thick
    path reaches. A root whose bone reaches ``RIB_MIN_REACH_MM`` out is a rib, of the vertebra in whose slab
    (between the disc planes) the root lies (see ``ROOT_SLAB_SHARE``).

    Args:
        volume: the CT in Hounsfield units.
        canal: the spinal canal's centre line (n x 3, RAS mm).
        planes: the disc planes, head to foot.
    """
    if len(planes) < 2 or len(canal) < 2:
        return RibReading((), (), (1, len(planes) - 1))
    grid, in_view = _rib_search_grid(volume, canal, planes)
    slab_mm = float(np.median(np.abs(np.diff([plane.centre[2] for plane in planes]))))
    source = Volume(volume.array, volume.affine, VolumeKind.INTENSITY)
    hounsfield = resample_to(source, grid, fill_value=-1000.0).array
    axes = [grid.affine[a, 3] + RIB_GRID_MM * np.arange(n) for a, n in enumerate(grid.shape)]
    order = np.argsort(canal[:, 2])
    centre = [np.interp(axes[2], canal[order, 2], canal[order, a]) for a in range(2)]
    across = axes[0][:, None, None] - centre[0][None, None, :]  # towards the right (R > 0)
    forward = axes[1][None, :, None] - centre[1][None, None, :]
    bone = ((hounsfield >= RIB_BONE_HU) & (np.abs(across) <= RIB_SEARCH_MM) & (forward >= RIB_FORWARD_MM[0])
            & (forward <= RIB_FORWARD_MM[1]))
    root_band = ((np.abs(across) >= RIB_ROOT_MM[0]) & (np.abs(across) <= RIB_ROOT_MM[1])
                 & (forward <= RIB_ROOT_FORWARD_MM))
    bone &= np.abs(across) >= RIB_ROOT_MM[0]
    across = np.broadcast_to(across, bone.shape)
    root_band = np.broadcast_to(root_band, bone.shape)
    pieces, _ = ndimage.label(bone)
    min_root = MIN_RIB_ROOT_MM3 / RIB_GRID_MM**3
    found: dict[str, set[int]] = {"right": set(), "left": set()}
    for index, box in enumerate(ndimage.find_objects(pieces), start=1):
        piece = pieces[box] == index
        reach = np.abs(across[box])
        if reach[piece].max() < RIB_MIN_REACH_MM:
            continue
        roots, _ = ndimage.label(piece & root_band[box])
        sizes = np.bincount(roots.ravel())[1:]
        if not (sizes >= min_root).any():
            continue
        roots[np.isin(roots, np.flatnonzero(sizes < min_root) + 1)] = 0
        if (sizes >= min_root).sum() > 1:
            depth = ndimage.distance_transform_edt(piece)
            territory = watershed(-depth, roots, mask=piece)
        else:
            territory = np.where(piece, roots.max(), 0)
        for root in np.unique(roots[roots > 0]):
            if reach[territory == root].max() < RIB_MIN_REACH_MM:
                continue  # a transverse process (or a rib's fleck) that only touches a rib
            voxels = np.argwhere(roots == root) + [s.start for s in box]
            points = voxels * RIB_GRID_MM + grid.affine[:3, 3]
            if np.ptp(points[:, 2]) > MAX_RIB_ROOT_MM:
                continue  # the sacrum's ala and the ilium
            shares = np.bincount(slab_and_distance(points, planes)[0]) / len(points)
            slab = int(np.flatnonzero(shares >= ROOT_SLAB_SHARE).max())
            below_last = float(np.mean((points - planes[-1].centre) @ planes[-1].normal))
            if slab < in_view[0] or below_last > END_SLAB_IN_VIEW * slab_mm:
                continue  # beyond the slabs read
            side = "right" if np.mean(across[box][roots == root]) > 0 else "left"
            found[side].add(slab)
    return RibReading(tuple(sorted(found["right"])), tuple(sorted(found["left"])), in_view)
