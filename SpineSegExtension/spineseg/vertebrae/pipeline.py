"""Segment and name every vertebra of a CT: the whole task on a :class:`Volume`.

Steps: check the image is a CT that can hold a vertebra (:mod:`spineseg.checks`), resample it to the model's isotropic working
grid, walk the spine (:mod:`.traversal`), look for the anatomical anchors
that fix the count (:mod:`.anchors`), name the vertebrae as one consecutive
run (:mod:`.levels`), and paint each vertebra's probability back
onto the input grid with linear interpolation, so that boundaries are as fine
as the input's voxels rather than the model's.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from ..checks import check_input
from ..choices import DeviceChoice, Task
from ..geometry import Grid, closest_ras_axes, resample_to, working_grid
from ..anatomy import level_size
from ..labels import vertebra_name
from ..progress import ProgressCallback, no_progress, scaled
from ..results import NamingRecord, VertebraeResult, VertebraRecord
from ..volume import Volume, VolumeKind
from .anchors import FIRST_RIB_LEVEL, LAST_RIB_LEVEL, Anchor, RibReading, find_anchors, read_ribs_along_chain
from .body_chain import distance_across_canal, distance_beside_canal, regroup_at_discs, voxels_to_ras
from .disc_planes import find_disc_planes
from .bone_division import DIVISION_BONE_HU, divide_bone, division_seeds
from .column import MAX_GAP_MM, MAX_OFFSET_MM, MAX_SAGITTAL_TILT_DEG, column_members
from .frame import find_spine_frame
from .levels import Naming, count_missed_vertebrae, name_run
from .patches import OUTSIDE_VALUE, normalise_ct
from .traversal import MASK_PROBABILITY, FoundVertebra, TraversalResult, TraversalSettings, traverse

if TYPE_CHECKING:  # torch loads with the model, not with this module
    from ..networks.vertebra_model import VertebraModel

__all__ = [
    "prepare_working_image", "find_vertebrae", "find_and_name_vertebrae", "naming_record", "label_working_grid",
    "segment_vertebrae", "keep_spine_column", "drop_fragments", "chain_naming", "UNANCHORED_WARNING",
    "NO_VERTEBRA_WARNING",
]

logger = logging.getLogger(__name__)

# Painting: a vertebra's box holds its voxels above this probability; the interpolated mask never
# reaches beyond them at any threshold used here.
SUPPORT_PROBABILITY = 0.05
# A vertebra counts as complete when its completeness probability is above this (the sigmoid's midpoint).
COMPLETE_PROBABILITY = 0.5
# Detached pieces of a painted vertebra smaller than this share of its largest piece are dropped.
SMALL_PIECE_FRACTION = 0.05
# A detached piece of a painted vertebra whose nearest voxel lies farther than this (mm) from the canal's centre,
# across the spine, is no bone of it (a kidney's contrast-enhanced cortex, bowel): every part of a vertebra joins
# bone within about 20 mm of the canal (the body's back wall, the pedicles, the laminae).
FAR_PIECE_MM = 30.0
# A rib-bearing vertebra's voxels farther to the side of the canal's centre than half its level's typical
# transverse span plus this (mm) are rib, beyond the transverse process that the rib leans on.
RIB_MARGIN_MM = 5.0
# The bone of this width (mm) beyond that limit, beside a rib-bearing level, seeds the ribs' own flood in the bone
# division, which then stops each rib at its joints with the spine (its head and tubercle).
RIB_SEED_WIDTH_MM = 15.0
# A found "vertebra" smaller than this share of the median one is a leftover piece (unless cut by the scan):
# a whole vertebra is rarely less than a third of its neighbours' size.
FRAGMENT_FRACTION = 0.35


# The working image's sharpness, as the standard deviation of its blur in working voxels, whatever the
# scan's own sampling, so that the network sees the same image of the same anatomy from a scan at any finer
# sampling (the real 3 mm CT resampled to 1.5 mm: names two levels off with the former anti-aliasing rule,
# the same names with this; 0.3 keeps the DICOM series' reading, 0.4 did not).
WORKING_BLUR = 0.3


def prepare_working_image(volume: Volume, spacing_mm: float) -> tuple[np.ndarray, Grid]:
    """Resample a CT onto the model's grid at a fixed sharpness (``WORKING_BLUR``) and normalise it; outside the
    scan becomes ``OUTSIDE_VALUE``."""
    grid = working_grid(volume, spacing_mm)
    source = Volume(volume.array, volume.affine, VolumeKind.INTENSITY)  # resampled in float32, in slabs
    resampled = resample_to(source, grid, fill_value=np.nan, blur_to_mm=WORKING_BLUR * spacing_mm).array
    outside = np.isnan(resampled)
    image = normalise_ct(np.nan_to_num(resampled, nan=0.0))
    image[outside] = OUTSIDE_VALUE
    return image, grid


Box = tuple[np.ndarray, np.ndarray]  # start and stop voxel indices


def _support_boxes(found: list[FoundVertebra], grid: Grid, target: Grid) -> list[Box | None]:
    """For each vertebra, the box of ``target`` voxels that its support (probability above
    ``SUPPORT_PROBABILITY`` on the working ``grid``) covers; None where it covers none."""
    work_to_input = np.linalg.inv(np.linalg.inv(grid.affine) @ target.affine)
    boxes: list[Box | None] = []
    for vertebra in found:
        support = np.argwhere(vertebra.probability > SUPPORT_PROBABILITY)
        if len(support) == 0:
            boxes.append(None)
            continue
        low = support.min(axis=0) - 1 + vertebra.corner
        high = support.max(axis=0) + 1 + vertebra.corner
        corners = np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1).T
        input_corners = (corners @ work_to_input[:3, :3].T) + work_to_input[:3, 3]
        start = np.maximum(np.floor(input_corners.min(axis=0)).astype(int), 0)
        stop = np.minimum(np.ceil(input_corners.max(axis=0)).astype(int) + 1, target.shape)
        boxes.append(None if np.any(stop <= start) else (start, stop))
    return boxes


def _spine_region(boxes: list[Box | None], shape: tuple[int, ...], margin: list[int]) -> tuple[slice, ...]:
    """The box around all vertebra boxes, ``margin`` voxels wider on each side (clipped to ``shape``)."""
    starts = [box[0] for box in boxes if box is not None]
    stops = [box[1] for box in boxes if box is not None]
    if not starts:
        return tuple(slice(0, 0) for _ in shape)
    low = np.maximum(np.min(starts, axis=0) - margin, 0)
    high = np.minimum(np.max(stops, axis=0) + margin, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _paint(
    found: list[FoundVertebra], levels: list[int], grid: Grid, target: Grid, threshold: float = MASK_PROBABILITY,
    region: tuple[slice, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label map on ``target`` (from the working ``grid``): each voxel gets the vertebra of highest probability
    above ``threshold``.

    Returns the labels and that highest probability per voxel, over ``region`` (a box of ``target`` holding
    every vertebra's support; default the whole grid).
    """
    region = region or tuple(slice(0, n) for n in target.shape)
    offset = np.array([s.start for s in region])
    labels = np.zeros(tuple(s.stop - s.start for s in region), dtype=np.uint8)
    best = np.zeros(labels.shape, dtype=np.float16)
    input_to_work = np.linalg.inv(grid.affine) @ target.affine
    for vertebra, level, box in zip(found, levels, _support_boxes(found, grid, target)):
        if box is None:
            continue
        start, stop = box
        local = tuple(slice(a, b) for a, b in zip(start - offset, stop - offset))
        index = np.indices(tuple(stop - start), dtype=np.float32).reshape(3, -1) + start[:, None]
        work = input_to_work[:3, :3] @ index + input_to_work[:3, 3:4] - vertebra.corner[:, None]
        probability = ndimage.map_coordinates(
            vertebra.probability.astype(np.float32), work, order=1, mode="constant", cval=0.0
        ).reshape(tuple(stop - start))
        take = (probability > threshold) & (probability > best[local])
        labels[local][take] = level
        best[local][take] = probability[take]
    return labels, best


# Bone refinement thresholds (HU): cortical and dense cancellous bone, and the lowest value
# kept where the network is confident (osteoporotic cancellous bone).
BONE_HU = 200.0
CONFIDENT_BONE_HU = 100.0
CANDIDATE_PROBABILITY = 0.2
# Voxels deeper than this inside the network's confident region (its mask) stay vertebra whatever their
# HU: the CT decides only the outer millimetres and the uncertain fringe. Marrow of osteoporotic bone,
# fatty sacral marrow and low-dose noise read below 100 HU, and where the cortex has a gap (thin
# endplates, the region's own edge) filling holes cannot recover them. 1 mm scored best before the bone
# division gave each body its marrow; since then 2 mm does (docs/vertebrae-physics.md, section 10): the
# confident region reaches 1-2 mm beyond the bone, and a shallower core kept the blur around the cortex; a
# 3 mm core cut the darker reading of the real CT (HU x 0.85) by 0.023.
CORE_DEPTH_MM = 2.0
# Depth of the surface band judged by the half-way rule: a CT's blur spreads bright cortex about this far.
# Grids coarser than this get no band (each voxel is already its own mixture of bone and tissue).
EDGE_BAND_MM = 2.0
# The cortex's intensity, for the half-way rule: this percentile of a vertebra's voxels.
CORTEX_PERCENTILE = 99.0
# The half-way rule finds the edge only where the scan resolves the cortex (about 1 mm thick): where the
# vertebrae's steepest edges imply a blur (Gaussian sigma, the median over the scan's vertebrae) above
# this, a thin cortex never reaches its plateau and the band would cut into bone, so the scan is judged as
# a coarse grid is (no band), whatever its voxel size. Measured in docs/vertebrae-physics.md, 3.
CORTEX_RESOLVED_BLUR_MM = 1.0


def _refine_with_bone(
    labels: np.ndarray, best: np.ndarray, hounsfield: np.ndarray, level: int, box: tuple[slice, ...],
    spacing_mm: tuple[float, float, float], divided_bone: np.ndarray | None = None, resolves_cortex: bool = True,
) -> None:
    """Snap one vertebra's boundary to the bone in the full-resolution CT, in place.

    The network works on a coarse grid; its interpolated probability says which
    vertebra a voxel belongs to, and the CT says where bone ends. A voxel keeps
    the label if it lies deeper than ``CORE_DEPTH_MM`` inside the confident
    region (the network's mask), if it is bone (>= 200 HU, or >= 100 HU where
    the network is confident), or if it lies in a cavity enclosed by these. On
    grids finer than ``EDGE_BAND_MM``, the outer band of that is partly bone,
    partly soft tissue (partial volume and blur); there a voxel outside the core
    keeps the label only where it is at least half-way from the surrounding
    tissue to the cortex (see ``_half_way_edge_hu``) or enclosed by such voxels.
    ``box`` bounds the vertebra's voxels; ``divided_bone`` (over ``box``) is bone found by
    :func:`.bone_division.divide_bone`, with the marrow its slices enclose, which counts as bone here.
    """
    region = labels[box] == level
    values = hounsfield[box]
    confident = region & (best[box] >= MASK_PROBABILITY)
    core = ndimage.distance_transform_edt(confident, sampling=spacing_mm) > CORE_DEPTH_MM
    bone = region & ((values >= BONE_HU) | ((values >= CONFIDENT_BONE_HU) & confident))
    if divided_bone is not None:
        bone |= region & divided_bone
    body = ndimage.binary_fill_holes(bone | core) & region
    band_voxels = int(EDGE_BAND_MM / max(spacing_mm))
    if band_voxels > 0 and body.any() and resolves_cortex:
        edge_hu = _half_way_edge_hu(values, body)
        surface = body & ~ndimage.binary_erosion(body, iterations=band_voxels)
        body = ndimage.binary_fill_holes(body & ~(surface & (values < edge_hu) & ~core)) & body
    labels[box][region & ~body] = 0


# A cavity joins a vertebra when that vertebra holds at least this share of the labelled voxels of the
# cavity's border and this share of all of it (the rest is bone the network left out, or another vertebra).
# The border is this thick: the model's coarse grid and the CT's blur leave a band of unlabelled bone
# between the marrow and the network's outline.
CAVITY_OWNER_SHARE = 0.6
CAVITY_BORDER_SHARE = 0.2
CAVITY_BORDER_MM = 3.0
# How far around a vertebra's painted box its cortex may still enclose marrow the network missed.
CAVITY_MARGIN_MM = 10.0


def _cavity_margin_voxels(spacing_mm: tuple[float, float, float]) -> list[int]:
    """``CAVITY_MARGIN_MM`` in voxels along each axis."""
    return [int(np.ceil(CAVITY_MARGIN_MM / s)) for s in spacing_mm]


def _fill_enclosed_marrow(
    labels: np.ndarray, hounsfield: np.ndarray, level: int, box: tuple[slice, ...],
    spacing_mm: tuple[float, float, float],
) -> None:
    """Give one vertebra the unlabelled cavities its own voxels and the CT's bone enclose, in place.

    On the model's 3 mm grid, marrow darker than about 50 HU (fatty sacral
    marrow, osteoporotic bodies) looks like soft tissue, and the network then
    outlines only the cortex. The cortex, seen in the full-resolution CT (>= ``BONE_HU``), closes the
    cavity; a cavity mostly bordered by this vertebra (see
    ``CAVITY_OWNER_SHARE``) is its marrow. Where the scan's face cuts a
    vertebra, the openings its cortex rings on that face count as closed, so a
    vertebra cut by the field of view keeps its marrow. The spinal canal, the
    foramina and the discs open onto other vertebrae or soft tissue and are
    never enclosed; a disc that a bony bridge closes is bordered by two
    vertebrae, so neither takes it.
    """
    margin = _cavity_margin_voxels(spacing_mm)
    around = tuple(slice(max(s.start - m, 0), min(s.stop + m, n)) for s, m, n in zip(box, margin, labels.shape))
    local = labels[around]
    solid = (local == level) | (hounsfield[around] >= BONE_HU)
    # Where the scan's face cuts the bone, cap the openings the bone encloses on that face.
    walled = np.pad(solid, 1, constant_values=False)
    for axis, span in enumerate(around):
        for at_edge, pad, outermost in ((span.start == 0, 0, 1), (span.stop == labels.shape[axis], -1, -2)):
            if at_edge:
                cap = ndimage.binary_fill_holes(walled[(slice(None),) * axis + (outermost,)])
                walled[(slice(None),) * axis + (pad,)] = cap
    inside = (slice(1, -1),) * 3
    cavities, _ = ndimage.label(ndimage.binary_fill_holes(walled)[inside] & ~solid & (local == 0))
    thickness = max(1, round(CAVITY_BORDER_MM / float(np.mean(spacing_mm))))
    for index, extent in enumerate(ndimage.find_objects(cavities), start=1):
        grown = tuple(slice(max(s.start - thickness, 0), s.stop + thickness) for s in extent)
        cavity = cavities[grown] == index
        border = local[grown][ndimage.binary_dilation(cavity, iterations=thickness) & ~cavity]
        own = int((border == level).sum())
        if own >= CAVITY_OWNER_SHARE * (border > 0).sum() and own >= CAVITY_BORDER_SHARE * border.size:
            local[grown][cavity] = level


def _half_way_edge_hu(values: np.ndarray, body: np.ndarray) -> float:
    """The intensity half-way between the tissue around ``body`` (median of a 1-voxel ring; water, 0 HU,
    if the body fills its box) and its cortex (``CORTEX_PERCENTILE`` inside); never below ``BONE_HU``.
    Where a blurred surface crosses it is the true edge."""
    return max(BONE_HU, (_surrounding_hu(values, body) + float(np.percentile(values[body], CORTEX_PERCENTILE))) / 2.0)


def _surrounding_hu(values: np.ndarray, body: np.ndarray) -> float:
    """The median HU of the 1-voxel ring around ``body`` (water, 0 HU, if the body fills its box)."""
    ring = ndimage.binary_dilation(body) & ~body
    return float(np.median(values[ring])) if ring.any() else 0.0


def _remove_pieces_far_from_canal(
    labels: np.ndarray, level: int, box: tuple[slice, ...], canal: np.ndarray, ras_of: np.ndarray,
) -> None:
    """Remove detached pieces of one label (inside ``box`` of ``labels``, whose voxel indices ``ras_of`` maps to RAS
    mm) none of whose voxels lies within ``FAR_PIECE_MM`` of the ``canal`` line, in place."""
    mask = labels[box] == level
    components, count = ndimage.label(mask)
    if not count:
        return
    where = np.argwhere(mask)
    across = distance_across_canal(voxels_to_ras(where + [s.start for s in box], ras_of), canal)
    nearest = np.asarray(ndimage.minimum(across, components[tuple(where.T)], np.arange(1, count + 1)))
    labels[box][np.isin(components, np.flatnonzero(nearest > FAR_PIECE_MM) + 1)] = 0


def _rib_side_limit(level: int) -> float:
    """How far (mm) to the side of the canal's centre a rib-bearing level's bone may reach: half the level's
    typical transverse span plus ``RIB_MARGIN_MM``."""
    return level_size(level).transverse_span / 2 + RIB_MARGIN_MM


def _rib_seeds(seeds: np.ndarray, hounsfield: np.ndarray, canal: np.ndarray, ras_of: np.ndarray) -> np.ndarray:
    """The ribs' seeds for the bone division: bone (``DIVISION_BONE_HU``) level with a rib-bearing level's seeds
    (head to foot, where ``ras_of`` maps voxel indices to RAS mm), between its rib limit (``_rib_side_limit``) and
    ``RIB_SEED_WIDTH_MM`` beyond it to the side of the ``canal`` line."""
    ribs = np.zeros(seeds.shape, bool)
    if not seeds.any():
        return ribs
    bone = np.argwhere(hounsfield >= DIVISION_BONE_HU)
    ras = voxels_to_ras(bone, ras_of)
    sideways = distance_beside_canal(ras, canal)
    for level, box in enumerate(ndimage.find_objects(seeds), start=1):
        if box is None or not FIRST_RIB_LEVEL <= level <= LAST_RIB_LEVEL:
            continue
        corners = np.array(np.meshgrid(*[(s.start, s.stop - 1) for s in box], indexing="ij")).reshape(3, -1).T
        heights = voxels_to_ras(corners, ras_of)[:, 2]
        limit = _rib_side_limit(level)
        beside = ((ras[:, 2] >= heights.min()) & (ras[:, 2] <= heights.max())
                  & (sideways > limit) & (sideways <= limit + RIB_SEED_WIDTH_MM))
        ribs[tuple(bone[beside].T)] = True
    return ribs


def _remove_ribs_beyond_transverse_processes(
    labels: np.ndarray, level: int, box: tuple[slice, ...], canal: np.ndarray, ras_of: np.ndarray,
) -> None:
    """Remove the voxels of a rib-bearing level (inside ``box`` of ``labels``, whose voxel indices ``ras_of`` maps
    to RAS mm) that lie farther to the side of the ``canal`` line than half the level's typical transverse span
    plus ``RIB_MARGIN_MM``: the ribs beyond the transverse processes, which the flood reaches through the
    costotransverse joints."""
    if not FIRST_RIB_LEVEL <= level <= LAST_RIB_LEVEL:
        return
    where = np.argwhere(labels[box] == level)
    sideways = distance_beside_canal(voxels_to_ras(where + [s.start for s in box], ras_of), canal)
    beyond = sideways > _rib_side_limit(level)
    labels[box][tuple(where[beyond].T)] = 0


def scan_blur_mm(
    labels: np.ndarray, hounsfield: np.ndarray, boxes: list[tuple[slice, ...] | None], levels: list[int],
    spacing_mm: tuple[float, float, float],
) -> float:
    """The scan's blur at the vertebrae's surfaces: the median over ``levels`` of ``_edge_blur_mm`` in each
    vertebra's box (``boxes`` indexed by level - 1, as ``ndimage.find_objects`` gives them); inf if none."""
    blurs = [
        _edge_blur_mm(hounsfield[box], labels[box] == level, spacing_mm)
        for level in levels
        if level <= len(boxes) and (box := boxes[level - 1]) is not None
    ]
    return float(np.median(blurs)) if blurs else float("inf")


def _edge_blur_mm(values: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, float, float]) -> float:
    """The blur at ``body``'s surface, as the sigma (mm) of a Gaussian-blurred step of the same height.

    A step of height C blurred by sigma rises at most C / (sqrt(2 pi) sigma) HU per mm. C is the cortex
    above the surrounding tissue (as in ``_half_way_edge_hu``), the rise the steepest slope (the same
    percentile) within 3 mm of the body. A scan interpolated from coarser slices keeps its slices' blur at
    any voxel size, so this, unlike the voxel size, tells whether the scan resolves a 1 mm cortex."""
    contrast = float(np.percentile(values[body], CORTEX_PERCENTILE)) - _surrounding_hu(values, body)
    slope = np.sqrt(sum(d ** 2 for d in np.gradient(values.astype(np.float32), *spacing_mm)))
    near = ndimage.distance_transform_edt(~body, sampling=spacing_mm) <= 3.0
    steepest = float(np.percentile(slope[near], CORTEX_PERCENTILE))
    return contrast / (np.sqrt(2.0 * np.pi) * steepest) if steepest > 0 else float("inf")


def _remove_small_pieces(
    labels: np.ndarray, level: int, box: tuple[slice, ...], keep_fraction: float = SMALL_PIECE_FRACTION
) -> None:
    """Remove detached pieces of one label (inside ``box``) smaller than ``keep_fraction`` of its largest, in place."""
    mask = labels[box] == level
    components, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(components.ravel())[1:]
        small = np.flatnonzero(sizes < keep_fraction * sizes.max()) + 1
        labels[box][np.isin(components, small)] = 0


def keep_spine_column(
    found: list[FoundVertebra], spacing_mm: float, max_offset_mm: float = MAX_OFFSET_MM,
    max_gap_mm: float = MAX_GAP_MM, max_sagittal_tilt_deg: float = MAX_SAGITTAL_TILT_DEG,
) -> list[FoundVertebra]:
    """Keep the largest run of found vertebrae that lines up as one spinal column (see :mod:`.column`).

    Once its trail ends, the walk keeps searching the scan and may accept a
    rib, an iliac wing or a calcified vessel beside or in front of the spine.
    The linked group with the most members (then the most voxels) is the
    spine. Naming fits one consecutive sequence, so every stray piece kept
    would shift the names.
    """
    centres = np.array([v.centroid for v in found]).reshape(-1, 3) * spacing_mm
    members = column_members(
        centres, np.array([v.voxel_count for v in found], float), max_offset_mm=max_offset_mm,
        max_gap_mm=max_gap_mm, max_sagittal_tilt_deg=max_sagittal_tilt_deg,
    )
    return [found[i] for i in members]


def drop_fragments(
    found: list[FoundVertebra], image_shape: tuple[int, int, int], fraction: float = FRAGMENT_FRACTION
) -> list[FoundVertebra]:
    """Remove "vertebrae" smaller than ``fraction`` of the median one found, unless cut by the scan's edge.

    Leftover pieces of an accepted vertebra (a process the network missed at
    first) can pass the 500 mm^3 fragment rule.
    """
    if len(found) < 3:
        return found
    typical = float(np.median([v.voxel_count for v in found]))
    margin = found[0].probability.shape[0] / 2

    def cut_by_scan_end(vertebra: FoundVertebra) -> bool:
        return bool(vertebra.centroid[2] < margin or vertebra.centroid[2] > image_shape[2] - 1 - margin)

    return [v for v in found if v.voxel_count >= fraction * typical or cut_by_scan_end(v)]


# A piece is judged body-or-arch only where the canal's centre line covers at least this share of its voxels'
# heights; it is an arch alone when under this share of those voxels lie in front of the canal's centre (plus a
# voxel: the canal's front wall). Bodies found on the phantoms and the real CTs put 40-90 % of their voxels there.
CANAL_COVERAGE = 0.6
MIN_FRONT_SHARE = 0.1


def drop_arch_only(found: list[FoundVertebra], canal_working: np.ndarray | None) -> list[FoundVertebra]:
    """Remove pieces that lie wholly behind the spinal canal: a posterior arch taken for a whole vertebra.

    A vertebra holds a body in front of the canal; naming counts pieces, so an arch counted as a vertebra shifts
    every name beyond it. ``canal_working`` is the canal's centre line in working-grid voxels (n x 3, k towards
    the head; see :class:`.frame.SpineFrame`); pieces at heights it does not reach are kept as they are.
    """
    if canal_working is None or len(canal_working) == 0 or not found:
        return found
    heights = np.round(canal_working[:, 2]).astype(int)
    front_of_canal = {int(k): float(canal_working[heights == k, 1].mean()) + 1.0 for k in np.unique(heights)}
    kept = []
    for vertebra in found:
        voxels = np.argwhere(vertebra.probability > MASK_PROBABILITY) + vertebra.corner
        covered = np.array([int(k) in front_of_canal for k in voxels[:, 2]], bool)
        if covered.mean() < CANAL_COVERAGE:
            kept.append(vertebra)
            continue
        front = np.array([j > front_of_canal[int(k)] for j, k in voxels[covered][:, 1:3]])
        if front.mean() >= MIN_FRONT_SHARE:
            kept.append(vertebra)
        else:
            logger.info("dropped a piece that lies behind the spinal canal (an arch without its body)")
    return kept


# The warning of a run that no anatomical anchor named.
UNANCHORED_WARNING = (
    "No anatomical anchor (sacrum, C2, last rib, C7/T1) named this run: the vertebrae are named from the network's "
    "estimates alone and the whole run may be off by one level or more."
)


# The warning of a run that found nothing (an exit status of 0 and empty outputs would look like success).
NO_VERTEBRA_WARNING = (
    "No vertebra was found. Check that the scan shows the spine, that it is a CT in Hounsfield units and that its "
    "voxel size is right (DICOM PixelSpacing, NIfTI pixdim); the model may also fail on this kind of scan (see its "
    "model card)."
)


def find_vertebrae(
    image: np.ndarray, model: VertebraModel, settings: TraversalSettings | None = None,
    progress: ProgressCallback = no_progress,
) -> tuple[list[FoundVertebra], list[int]]:
    """Walk a working-grid CT (see ``prepare_working_image``), keep the spinal column and name it.

    Returns:
        The vertebrae head to foot and their VerSe numbers (see :func:`find_and_name_vertebrae`).
    """
    found, naming = find_and_name_vertebrae(image, model, settings, progress)
    return found, naming.levels


def find_and_name_vertebrae(
    image: np.ndarray, model: VertebraModel, settings: TraversalSettings | None = None,
    progress: ProgressCallback = no_progress, canal_working: np.ndarray | None = None,
) -> tuple[list[FoundVertebra], Naming]:
    """Walk a working-grid CT (see ``prepare_working_image``), keep the spinal column, find its anatomical
    anchors and name it.

    ``settings`` default to the walk rules with the model's patch size and spacing; ``canal_working`` is the spinal
    canal's centre line in working-grid voxels, where known (pieces behind it alone are dropped: see
    :func:`drop_arch_only`).

    Returns:
        The vertebrae head to foot and their naming (VerSe numbers, a sacrum in pieces repeating 26, and the
        anchors that fixed them).
    """
    settings = settings or TraversalSettings(patch_size=model.settings.patch_size, spacing_mm=model.settings.spacing_mm)
    # On a GPU the search predicts several patches per call; on the CPU one at a time costs the same, and
    # patches predicted ahead but not needed would only add time.
    batch = model.predict_batch if model.device.type == "cuda" else None
    walk: TraversalResult = traverse(image, model.predict, settings, progress, predict_batch=batch)
    logger.info(
        "traversal: %d vertebrae, %d forward passes, stopped because it %s",
        len(walk.vertebrae), walk.forward_passes, walk.stop_reason,
    )
    column = keep_spine_column(walk.vertebrae, settings.spacing_mm)
    if len(column) < len(walk.vertebrae):
        logger.info("dropped %d found pieces off the spinal column", len(walk.vertebrae) - len(column))
    # Head to foot by the working grid's superior axis, whatever the order of discovery.
    found = drop_arch_only(drop_fragments(column, image.shape), canal_working)
    found = sorted(found, key=lambda v: -v.centroid[2])[: settings.max_vertebrae]
    missed = count_missed_vertebrae([v.centroid[2] * settings.spacing_mm for v in found])
    if any(missed):
        logger.info("the walk missed %d vertebra(e); naming skips them", sum(missed))
    hounsfield = np.where(image == OUTSIDE_VALUE, np.float32(-1000.0), image * np.float32(1000.0))
    findings, anatomy = find_anchors(hounsfield, found, settings.spacing_mm)
    logger.info("anchors: %s; ribs per piece: %s", {a.value: i for a, i in findings.anchors().items()} or "none",
                findings.ribs)
    naming = name_run([v.position for v in found], [v.completeness > COMPLETE_PROBABILITY for v in found], missed,
                      findings.anchors())
    return found, naming


def naming_record(naming: Naming) -> NamingRecord:
    """What the results report of a naming: the anchors by name, and the vertebra each one marks."""
    return NamingRecord(
        anchor=naming.anchor.value if naming.anchor else None,
        anchors_found={a.value: vertebra_name(naming.levels[index]) for a, index in naming.found.items()},
        overruled=[a.value for a in naming.found if a not in naming.followed],
        variant=None if naming.variant is None else vertebra_name(naming.variant),
        renamed=naming.renamed,
    )


# Anchors that the names of the walk's pieces follow before ribs read along the chain (see ``chain_naming``).
TRUSTED_OVER_RIBS = (Anchor.SACRUM, Anchor.C2)
RIB_ANCHOR_LEVEL = {Anchor.LAST_RIB: LAST_RIB_LEVEL, Anchor.FIRST_RIB: FIRST_RIB_LEVEL}


def chain_naming(naming: Naming, ribs: RibReading, first: int, origin: dict[int, int], keep_pieces: bool
                 ) -> NamingRecord:
    """What fixed the names of the chain of vertebrae (slab ``s`` named ``first + s``, see
    :func:`.body_chain.regroup_at_discs`).

    ``keep_pieces``: the chain kept the anchor the names of the walk's pieces followed (the sacrum or C2, or ribs
    read on the pieces where the ribs read along the chain fix nothing and contradict nothing); else the names
    follow the rib anchors read along the chain (see :meth:`.anchors.RibReading.judge`), or none. Ribs read on
    the pieces are reported only where the chain's say nothing: a piece that straddles a disc reads the ribs of
    two vertebrae. ``origin`` maps each vertebra of the chain to the piece it came from (see
    ``regroup_at_discs``); ``renamed`` counts the vertebrae named otherwise than the network's estimates alone
    name their pieces.
    """
    rib_anchors, rib_problem = ribs.judge()
    chain_silent = not rib_anchors and rib_problem is None
    pieces = [a for a in naming.found if a in TRUSTED_OVER_RIBS or chain_silent]
    found = {a.value: vertebra_name(naming.levels[naming.found[a]]) for a in pieces}
    overruled = [a.value for a in pieces if a not in naming.followed]
    for anchor, slab in rib_anchors.items():
        found[anchor.value] = vertebra_name(first + slab)
        if first + slab != RIB_ANCHOR_LEVEL[anchor]:
            overruled.append(anchor.value)
    followed_ribs = [a for a in (Anchor.LAST_RIB, Anchor.FIRST_RIB) if a in rib_anchors and a.value not in overruled]
    anchor = naming.anchor if keep_pieces else (followed_ribs[0] if followed_ribs else None)
    plain = dict(zip(naming.levels, naming.plain))
    renamed = sum(new != plain.get(old, old) for new, old in origin.items())
    variant = vertebra_name(naming.variant) if keep_pieces and naming.variant is not None else None
    return NamingRecord(anchor=anchor.value if anchor else None, anchors_found=found, overruled=overruled,
                        variant=variant, renamed=renamed)


def _naming_warnings(record: NamingRecord, found_any: bool, rib_problem: str | None = None) -> list[str]:
    """Warnings about the naming: nothing was found, none anchored it, anchors disagree, or the ribs read along
    the chain contradict each other (``rib_problem``: how)."""
    if not found_any:
        return [NO_VERTEBRA_WARNING]
    warnings = [] if record.anchored else [UNANCHORED_WARNING]
    if rib_problem:
        warnings.append(f"The ribs read along the spine contradict each other ({rib_problem}); no rib anchor was used.")
    for anchor in record.overruled:
        if record.anchor is None:  # a rib anchor too far from the network's estimate to believe
            warnings.append(f"The {anchor} (on {record.anchors_found[anchor]}) is too far from the network's "
                            f"estimate of the levels to be believed; it was not used.")
        else:
            warnings.append(f"The {anchor} (on {record.anchors_found[anchor]}) disagrees with the {record.anchor}; "
                            f"the names follow the {record.anchor}.")
    return warnings


def _translation(offset: list[int]) -> np.ndarray:
    """The 4 x 4 matrix that moves voxel indices by ``offset``."""
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def _anchored_level(naming: Naming) -> int | None:
    """The level of the piece the naming's anchor marks (None when unanchored)."""
    return None if naming.anchor is None else naming.levels[naming.found[naming.anchor]]


def label_working_grid(found: list[FoundVertebra], levels: list[int], shape: tuple[int, int, int]) -> np.ndarray:
    """The label map of named vertebrae on the working grid itself (no bone refinement): for validation."""
    grid = Grid(shape, np.eye(4))  # painting onto its own grid: only the shape matters
    return _paint(found, levels, grid, grid)[0]


def segment_vertebrae(
    volume: Volume,
    model: "VertebraModel | str | os.PathLike | None" = None,
    device: DeviceChoice | str = DeviceChoice.AUTO,
    progress: ProgressCallback = no_progress,
    settings: TraversalSettings | None = None,
    refine_with_bone: bool = True,
    force_modality: bool = False,
    chain_at_discs: bool = True,
) -> VertebraeResult:
    """Find, outline and name every vertebra of a CT.

    Args:
        volume: CT in Hounsfield units, any orientation and spacing.
        model: a loaded model, a bundled model's name, a manifest or weights path, or None (the bundled default).
        device: 'auto', 'cpu' or 'cuda' (used when the model is loaded here).
        progress: ``(fraction, message)`` callback; raising in it cancels.
        settings: traversal rules; by default they follow the model's geometry.
        refine_with_bone: give the bone near the vertebrae, with its marrow, to one of them (see
            :func:`.bone_division.divide_bone`), snap boundaries to bone in the full-resolution CT (see
            ``_refine_with_bone``) and fill the marrow each vertebra's cortex encloses (see ``_fill_enclosed_marrow``).
        force_modality: run even if the intensities say this is not a CT in Hounsfield units.
        chain_at_discs: with ``refine_with_bone``, find the CT's intervertebral discs (see :mod:`.disc_planes`) and
            seed one vertebra between each two of them (see :func:`.body_chain.regroup_at_discs`).

    Returns:
        The label map in the input's grid (VerSe numbers), one record per vertebra head to foot, and the
        input's warnings.

    Raises:
        InputError: the image cannot be used (see :func:`spineseg.checks.check_input`).
    """
    warnings = check_input(volume, Task.VERTEBRAE, force_modality)
    progress(0.0, "loading the model")
    from ..model_store import load_model

    model = load_model(Task.VERTEBRAE, model, device)
    progress(0.02, "resampling to the model's grid")
    image, grid = prepare_working_image(volume, model.settings.spacing_mm)
    progress(0.04, "finding the spinal canal")
    frame = find_spine_frame(volume)
    canal_working = None if frame is None else frame.canal_in(grid.affine)
    found, naming = find_and_name_vertebrae(image, model, settings, scaled(progress, 0.05, 0.9), canal_working)
    levels = naming.levels
    record = naming_record(naming)
    rib_problem = None
    progress(0.9, "painting vertebrae onto the input grid")
    threshold = CANDIDATE_PROBABILITY if refine_with_bone else MASK_PROBABILITY
    # Painting and refinement work on the spine's region of the input grid, which holds every vertebra's
    # box and, one voxel beyond the marrow search's reach, all that the search reads: results are those
    # of the whole grid, and a large scan's grid is never copied or labelled whole until the end.
    target = Grid(volume.shape, volume.affine)
    margin = [n + 1 for n in _cavity_margin_voxels(volume.spacing)]
    region = _spine_region(_support_boxes(found, grid, target), volume.shape, margin)
    labels, best = _paint(found, levels, grid, target, threshold, region)
    hounsfield = volume.array[region]
    region_to_ras = volume.affine @ _translation([s.start for s in region])
    # One pass for every vertebra's bounding box; refinement only shrinks them, so they stay valid.
    boxes = ndimage.find_objects(labels) if labels.size else []
    records = []
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    # Pieces named alike (a sacrum found in parts) are one vertebra; dict keeps head-to-foot order.
    completeness_by_level: dict[int, float] = {}
    for vertebra, level in zip(found, levels):
        completeness_by_level[level] = max(completeness_by_level.get(level, 0.0), float(vertebra.completeness))
    disc_planes = []
    resolves_cortex = True
    if refine_with_bone:
        progress(0.92, "dividing the bone between the vertebrae")
        canal = None if frame is None else frame.canal_voxels(volume.affine, volume.shape, region)
        superior_axis = int(closest_ras_axes(volume.direction)[0][2])
        seeds, first = None, None
        disc_planes = find_disc_planes(volume, frame) if chain_at_discs and frame is not None else []
        if disc_planes:
            ribs = read_ribs_along_chain(volume, frame.canal, disc_planes)
            rib_anchors, problem = ribs.judge()
            logger.info("ribs along the chain (slabs): right %s, left %s; anchors %s; %s", ribs.right, ribs.left,
                        {a.value: slab for a, slab in rib_anchors.items()}, problem or "no contradiction")
            # The sacrum and C2 outrank the ribs; ribs read on the pieces count only where the chain's say nothing.
            keep_pieces = naming.anchor in TRUSTED_OVER_RIBS or (
                naming.anchor is not None and not rib_anchors and problem is None)
            slab_level = None if keep_pieces else ribs.slab_level()
            seeds, origin, first = regroup_at_discs(
                labels, best >= MASK_PROBABILITY, hounsfield, region_to_ras, disc_planes, frame.canal,
                _anchored_level(naming) if keep_pieces else None, slab_level,
                None if keep_pieces else dict(zip(naming.levels, naming.plain)))
            # A vertebra of the chain is as complete as the piece it came from; a body the walk missed lies
            # between two found ones, inside the scan.
            completeness_by_level = {new: completeness_by_level.get(old, 1.0) for new, old in sorted(origin.items())}
            if first is not None:
                record = chain_naming(naming, ribs, first, origin, keep_pieces)
                rib_problem = None if naming.anchor in TRUSTED_OVER_RIBS else problem
        # The disc planes bar the bone only where the chain of pieces agreed with them (a lone plane on a short
        # scan may lie inside a body).
        seeds = division_seeds(labels, best, seeds)
        rib_bone = None if frame is None else _rib_seeds(seeds, hounsfield, frame.canal, region_to_ras)
        labels, bone = divide_bone(labels, best, hounsfield, volume.spacing, superior_axis, canal, seeds,
                                   None if frame is None else frame.canal, region_to_ras,
                                   disc_planes if first is not None else [], rib_bone)
        boxes = ndimage.find_objects(labels) if labels.size else []
        if max(volume.spacing) <= EDGE_BAND_MM:
            blur = scan_blur_mm(labels, hounsfield, boxes, list(completeness_by_level), volume.spacing)
            resolves_cortex = blur <= CORTEX_RESOLVED_BLUR_MM
            logger.info("blur at the vertebrae's surfaces: sigma %.2f mm", blur)
    for index, (level, completeness) in enumerate(completeness_by_level.items()):
        box = boxes[level - 1] if level <= len(boxes) else None
        if box is None:
            continue
        if refine_with_bone:
            done = 0.92 + 0.08 * index / len(completeness_by_level)
            progress(done, f"refining {vertebra_name(level)} with bone")
            _refine_with_bone(labels, best, hounsfield, level, box, volume.spacing, bone[box], resolves_cortex)
            progress(done, f"filling {vertebra_name(level)}'s marrow")
            _fill_enclosed_marrow(labels, hounsfield, level, box, volume.spacing)
        if frame is not None:
            _remove_pieces_far_from_canal(labels, level, box, frame.canal, region_to_ras)
            _remove_ribs_beyond_transverse_processes(labels, level, box, frame.canal, region_to_ras)
        _remove_small_pieces(labels, level, box)
    # Counted once every vertebra is refined: refining one may move voxels between it and its neighbour.
    boxes = ndimage.find_objects(labels) if labels.size else []
    for level, completeness in completeness_by_level.items():
        box = boxes[level - 1] if level <= len(boxes) else None
        if box is None:
            continue
        voxels = np.argwhere(labels[box] == level) + [s.start + r.start for s, r in zip(box, region)]
        if len(voxels) == 0:
            continue
        centroid = volume.ijk_to_ras(voxels.mean(axis=0))[0]
        records.append(
            VertebraRecord(
                level=level,
                voxel_count=len(voxels),
                volume_ml=round(len(voxels) * voxel_ml, 3),
                completeness=round(completeness, 4),
                centroid_ras=tuple(float(x) for x in centroid),
            )
        )
    for warning in _naming_warnings(record, bool(found), rib_problem):
        logger.warning(warning)
        warnings = [*warnings, warning]
    label_map = np.zeros(volume.shape, dtype=np.uint8)
    label_map[region] = labels
    progress(1.0, f"{len(records)} vertebrae")
    canal_line = None if frame is None else frame.canal
    planes = [(plane.centre, plane.normal) for plane in disc_planes]
    return VertebraeResult(Volume(label_map, volume.affine, VolumeKind.LABEL), records, warnings, record, canal_line,
                           planes)
