"""The patch walk along the spine that finds one vertebra at a time.

Published rules (Lessmann et al.): slide the patch in half-patch steps until
a new fragment of at least 1000 mm^3 (500 mm^3 after the first vertebra)
appears; move the patch to the fragment's centre until it moves at most 2
voxels (after 10 moves take the mean of the last two); add the mask to the
instance memory; continue from there.

Faults of the public port fixed here: every loop is bounded (search
positions are finite and only advance, refinement has a step limit, the
number of vertebrae and forward passes are capped), patch centres are
clamped in all three axes, memory is pasted at the patch's own place, and
the search begins wherever the spine is, not at a fixed corner.

The work is bounded by what the scan can hold, not by the model's behaviour
(on real anatomy an early model walked 582 forward passes to accept 37 pieces
of a 3 mm scan of ten vertebrae, most of them for stray bone):

- the walk accepts at most ``PIECES_PER_VERTEBRA`` pieces per vertebra the
  scan's head-foot extent can show (:func:`spineseg.anatomy.most_vertebrae_in`);
- a fragment that the refinement loses is remembered as rejected and never
  found again by a later search patch that overlaps it;
- once ``MIN_COLUMN_PIECES`` accepted pieces line up as a spinal column
  (:mod:`.column`), a fragment found where no piece could join that column
  (beside or in front of it) is rejected without refinement, and search
  patches that cannot hold such a piece are skipped: the pipeline would drop
  those pieces anyway (``keep_spine_column``);
- a fragment that is not bone in the CT (under ``MIN_BONE_FRACTION`` of its
  voxels above 150 HU) is rejected, found by the search or after refinement.

Beyond the paper: a vertebra's uncertain fringe stays open to the next one.
The network tends to reach into the vertebra below (nothing there is in
memory yet); with the published rule that overreach entered the memory and
the next vertebra could never take it back, so an L4 holding part of L5 left
an L5 remainder that merged with the sacrum. Here the memory the network sees
holds only voxels above ``memory_probability``; the voxels the walk has
claimed (every accepted mask) decide what counts as a new fragment, so each
acceptance still adds new voxels and the walk still ends. A voxel two
vertebrae claim goes to the more probable one when the labels are painted.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from scipy import ndimage

from ..anatomy import most_vertebrae_in
from ..progress import ProgressCallback, no_progress
from .column import column_members, links
from .patches import OUTSIDE_VALUE, extract_patch, overlap_slices, patch_corner

if TYPE_CHECKING:  # torch loads with the model, not with the walk
    from ..networks.vertebra_model import PatchPrediction

__all__ = [
    "MASK_PROBABILITY", "TraversalSettings", "FoundVertebra", "TraversalResult", "traverse", "piece_limit", "off_column",
    "out_of_column_reach",
]

Predictor = Callable[[np.ndarray, np.ndarray], "PatchPrediction"]
# Several patches at once: (images N x D x H x W, memories N x D x H x W) -> one prediction per patch.
BatchPredictor = Callable[[np.ndarray, np.ndarray], "list[PatchPrediction]"]

# A voxel is in the network's mask above this probability (the sigmoid's midpoint, as published).
MASK_PROBABILITY = 0.5
# A found vertebra keeps its probabilities this many voxels around its mask, for smooth painting.
SUPPORT_MARGIN_VOXELS = 2
# A vertebra is bone: on real 3 mm CTs 40-65 % of a vertebra's voxels exceed 150 HU (the sacrum's 42 %), on
# the phantoms 39-69 %. A fragment with fewer than this share is soft tissue the network took for bone
# (bowel loops, vessels), which networks trained on random contrasts are prone to; it is never accepted.
MIN_BONE_FRACTION = 0.2
# At coarse resolution a vertebra may be accepted as two pieces (body and posterior elements).
PIECES_PER_VERTEBRA = 2
# This many linked pieces make a spinal column that guides the search (one or two may be stray bone).
MIN_COLUMN_PIECES = 3


@dataclass(frozen=True)
class TraversalSettings:
    """Rules of the walk. Volumes are in mm^3, distances in voxels."""

    patch_size: int = 40
    spacing_mm: float = 3.0
    first_fragment_mm3: float = 1000.0
    next_fragment_mm3: float = 500.0
    converged_voxels: float = 2.0
    max_refinement_steps: int = 10
    max_vertebrae: int = 25  # in the result, after stray pieces are dropped
    max_pieces: int = 40  # accepted by the walk: vertebrae plus strays off the spine (see also piece_limit)
    max_forward_passes: int = 2000
    bone_threshold: float = 0.15  # normalised CT (150 HU): patches without such voxels hold no vertebra
    memory_probability: float = 0.8  # the network's memory gets a vertebra's voxels above this (0.5: the paper)
    search_batch: int = 8  # search patches predicted together when a batch predictor is given (a GPU)

    def __post_init__(self) -> None:
        if self.patch_size < 8:
            raise ValueError(f"patch_size must be at least 8, got {self.patch_size}")
        if self.max_vertebrae < 1 or self.max_pieces < 1 or self.max_forward_passes < 1 or self.search_batch < 1:
            raise ValueError("max_vertebrae, max_pieces, max_forward_passes and search_batch must be at least 1")


@dataclass
class FoundVertebra:
    """One vertebra in the working grid: its probability patch and the heads' outputs."""

    corner: np.ndarray
    probability: np.ndarray  # float16 cube, zero outside this vertebra's own component
    voxel_count: int
    completeness: float
    position: float
    centroid: np.ndarray  # working-grid voxel coordinates


@dataclass
class TraversalResult:
    vertebrae: list[FoundVertebra]
    forward_passes: int
    stop_reason: str


def _search_positions(image: np.ndarray, size: int, bone_threshold: float) -> list[np.ndarray]:
    """Patch centres in half-patch steps over the box holding the image's bone, head (high k) first, central
    columns first.

    The steps start from the bone, not from the grid's edge, so that a scan padded with air or cut wider
    is searched at the same places in the body (the same walk, the same result).
    """
    bone = np.argwhere(image > bone_threshold)
    if len(bone) == 0:
        return []
    start, stop = bone.min(axis=0), bone.max(axis=0) + 1
    half = size // 2

    def centres(axis: int) -> list[float]:
        extent = int(stop[axis] - start[axis])
        if extent <= size:
            return [float(start[axis]) + (extent - 1) / 2]
        values = list(np.arange(half, extent - half, half, dtype=float))
        if values[-1] < extent - half:
            values.append(float(extent - half))
        return [float(start[axis]) + value for value in values]

    middle = (start[:2] + stop[:2] - 1) / 2
    columns = sorted(
        ((i, j) for i in centres(0) for j in centres(1)),
        key=lambda ij: float(np.hypot(ij[0] - middle[0], ij[1] - middle[1])),
    )
    return [np.array([i, j, k]) for k in sorted(centres(2), reverse=True) for i, j in columns]


class _BudgetExhausted(Exception):
    """Raised inside the walk when the forward-pass budget is used up."""


class _Walker:
    """State of one traversal: the volume, the memory and the forward-pass budget."""

    def __init__(self, image: np.ndarray, predict: Predictor, settings: TraversalSettings,
                 predict_batch: BatchPredictor | None = None) -> None:
        self.image = image
        self.predict = predict
        self.predict_batch = predict_batch
        # Predictions made ahead for search patches (by corner), valid while the memory stays as it was.
        self.ahead: dict[tuple[int, ...], PatchPrediction] = {}
        self.settings = settings
        self.memory = np.zeros(image.shape, dtype=bool)  # the network's input: the vertebrae's sure voxels
        self.claimed = np.zeros(image.shape, dtype=bool)  # every accepted mask: what is no longer new
        self.rejected = np.zeros(image.shape, dtype=bool)  # fragments given up on: not searched again
        self.passes = 0
        self.voxel_mm3 = settings.spacing_mm**3
        self.upper = np.array(image.shape, dtype=float) - 1

    def clamp(self, centre: np.ndarray) -> np.ndarray:
        return np.clip(centre, 0.0, self.upper)

    def has_bone(self, centre: np.ndarray) -> bool:
        corner = patch_corner(centre, self.settings.patch_size)
        overlap = overlap_slices(corner, self.settings.patch_size, self.image.shape)
        return overlap is not None and bool((self.image[overlap[0]] > self.settings.bone_threshold).any())

    def run(self, centre: np.ndarray) -> tuple[np.ndarray, PatchPrediction, np.ndarray]:
        """Predict at ``centre`` (or take the prediction made ahead there); return the corner, prediction
        and memory patch used."""
        size = self.settings.patch_size
        corner = patch_corner(centre, size)
        memory = extract_patch(self.memory, corner, size, False)
        made_ahead = self.ahead.pop(tuple(corner), None)
        if made_ahead is not None:
            return corner, made_ahead, memory
        if self.out_of_budget():
            raise _BudgetExhausted
        image = extract_patch(self.image, corner, size, OUTSIDE_VALUE)
        self.passes += 1
        return corner, self.predict(image, memory), memory

    def predict_ahead(self, centres: list[np.ndarray]) -> None:
        """Predict the search patches at ``centres`` in one batch, within the budget, for :meth:`run` to take.

        Between acceptances the memory does not change, so each prediction is the one :meth:`run` would
        make; :meth:`remember` drops those not taken. Each patch counts as a forward pass."""
        size = self.settings.patch_size
        corners = [patch_corner(centre, size) for centre in centres]
        corners = [c for c in corners if tuple(c) not in self.ahead]
        corners = corners[:max(self.settings.max_forward_passes - self.passes, 0)]
        if self.predict_batch is None or len(corners) < 2:
            return
        images = np.stack([extract_patch(self.image, c, size, OUTSIDE_VALUE) for c in corners])
        memories = np.stack([extract_patch(self.memory, c, size, False) for c in corners])
        self.passes += len(corners)
        self.ahead.update(zip((tuple(c) for c in corners), self.predict_batch(images, memories)))

    def remember(self, overlap: tuple[tuple[slice, ...], tuple[slice, ...]], mask: np.ndarray,
                 sure: np.ndarray) -> None:
        """Claim an accepted vertebra's mask and put its sure part into the memory (patch ``overlap``)."""
        self.claimed[overlap[0]] |= mask[overlap[1]]
        self.memory[overlap[0]] |= sure[overlap[1]]
        self.ahead.clear()  # made with the memory as it was

    def new_fragment(self, prediction: PatchPrediction, corner: np.ndarray, min_mm3: float) -> np.ndarray | None:
        """The largest connected component of the mask that no accepted vertebra claimed, if big enough."""
        size = self.settings.patch_size
        seen = extract_patch(self.claimed, corner, size, False) | extract_patch(self.rejected, corner, size, False)
        candidate = (prediction.probability > MASK_PROBABILITY) & ~seen
        components, count = ndimage.label(candidate)
        if count == 0:
            return None
        sizes = np.bincount(components.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        if sizes[largest - 1] * self.voxel_mm3 < min_mm3:
            return None
        return components == largest

    def out_of_budget(self) -> bool:
        return self.passes >= self.settings.max_forward_passes

    def is_bone(self, fragment: np.ndarray, corner: np.ndarray) -> bool:
        """Whether at least ``MIN_BONE_FRACTION`` of a fragment's voxels in the scan are bone (> ``bone_threshold``)."""
        values = extract_patch(self.image, corner, self.settings.patch_size, OUTSIDE_VALUE)[fragment]
        values = values[values != OUTSIDE_VALUE]
        return bool(values.size) and float((values > self.settings.bone_threshold).mean()) >= MIN_BONE_FRACTION

    def reject(self, fragment: np.ndarray, corner: np.ndarray) -> None:
        """Remember a fragment (a mask in the patch at ``corner``) as given up on."""
        overlap = overlap_slices(corner, self.settings.patch_size, self.rejected.shape)
        if overlap is not None:
            self.rejected[overlap[0]] |= fragment[overlap[1]]


def piece_limit(image: np.ndarray, settings: TraversalSettings) -> int:
    """How many pieces the walk may accept in ``image``: ``PIECES_PER_VERTEBRA`` per vertebra that the scan's
    head-foot extent can show, at most ``max_pieces``. The extent is that of the working-grid slices holding
    bone, so that air around the body (a padded or wider field of view) changes nothing."""
    bone_slices = int(np.count_nonzero((image > settings.bone_threshold).any(axis=(0, 1))))
    return min(settings.max_pieces, PIECES_PER_VERTEBRA * most_vertebrae_in(bone_slices * settings.spacing_mm))


def _column_mm(found: list[FoundVertebra], spacing_mm: float) -> np.ndarray | None:
    """Centroids (mm) of the spinal column among ``found``, or None while fewer than ``MIN_COLUMN_PIECES`` line up."""
    centres = np.array([v.centroid for v in found]).reshape(-1, 3) * spacing_mm
    column = centres[column_members(centres, np.array([v.voxel_count for v in found], float))]
    return column if len(column) >= MIN_COLUMN_PIECES else None


def off_column(centre: np.ndarray, found: list[FoundVertebra], spacing_mm: float) -> bool:
    """True when a fragment centred at ``centre`` (voxels) could join no spinal column of ``found``: once
    ``MIN_COLUMN_PIECES`` pieces are linked, it lies beside or in front of every one of them (any height)."""
    column = _column_mm(found, spacing_mm)
    return column is not None and not links(np.asarray(centre, float)[None] * spacing_mm, column, max_gap_mm=np.inf).any()


def out_of_column_reach(corner: np.ndarray, size: int, found: list[FoundVertebra], spacing_mm: float) -> bool:
    """True when no fragment inside the patch at ``corner`` could join the spinal column of ``found``
    (see :func:`off_column`): for each column piece, even the patch's most favourable point, nearest to it
    across and front to back and farthest head to foot (the sagittal rule widens with height), fails the rule."""
    column = _column_mm(found, spacing_mm)
    if column is None:
        return False
    low, high = np.asarray(corner, float) * spacing_mm, (np.asarray(corner, float) + size - 1) * spacing_mm
    favourable = np.clip(column, low, high)
    favourable[:, 2] = np.where(np.abs(column[:, 2] - low[2]) > np.abs(column[:, 2] - high[2]), low[2], high[2])
    return not np.diagonal(links(favourable, column, max_gap_mm=np.inf)).any()


def traverse(
    image: np.ndarray,
    predict: Predictor,
    settings: TraversalSettings | None = None,
    progress: ProgressCallback = no_progress,
    predict_batch: BatchPredictor | None = None,
) -> TraversalResult:
    """Find vertebrae one by one in a normalised CT on the working grid (k towards the head).

    Args:
        image: normalised CT (see ``patches.normalise_ct``), outside of the scan = ``OUTSIDE_VALUE``.
        predict: ``(image_patch, memory_patch) -> PatchPrediction``.
        settings: walk rules; the default matches the bundled model.
        progress: called with the fraction of the search done; may raise to cancel.
        predict_batch: predicts several patches at once; with it, the search predicts up to
            ``settings.search_batch`` of the coming search patches together (worth it on a GPU). The walk
            and its result are the same; the passes predicted ahead and not needed still count.

    Returns:
        The vertebrae in the order found, the number of forward passes and why the walk stopped.
    """
    settings = settings or TraversalSettings()
    walker = _Walker(image, predict, settings, predict_batch)
    positions = _search_positions(image, settings.patch_size, settings.bone_threshold)
    found: list[FoundVertebra] = []

    try:
        stop_reason = _walk(walker, positions, found, progress)
    except _BudgetExhausted:
        stop_reason = f"used the budget of {settings.max_forward_passes} forward passes"
    return TraversalResult(found, walker.passes, stop_reason)


def _walk(walker: _Walker, positions: list[np.ndarray], found: list[FoundVertebra], progress: ProgressCallback) -> str:
    """The walk itself; appends to ``found`` and returns why it stopped."""
    settings = walker.settings
    most_pieces = piece_limit(walker.image, settings)
    next_search = 0
    current: np.ndarray | None = None

    def look(centre: np.ndarray, min_mm3: float) -> tuple[np.ndarray, np.ndarray] | None:
        """A new fragment at ``centre`` and its patch corner; one no spinal column could take is rejected."""
        corner, prediction, _ = walker.run(centre)
        fragment = walker.new_fragment(prediction, corner, min_mm3)
        if fragment is None:
            return None
        if not walker.is_bone(fragment, corner) or off_column(
                corner + np.argwhere(fragment).mean(axis=0), found, settings.spacing_mm):
            walker.reject(fragment, corner)
            return None
        return fragment, corner

    def worth_searching(centre: np.ndarray) -> bool:
        """A search patch that holds bone and could hold a piece of the spinal column found so far."""
        return walker.has_bone(centre) and not out_of_column_reach(
            patch_corner(centre, settings.patch_size), settings.patch_size, found, settings.spacing_mm)

    while True:
        if len(found) >= most_pieces:
            return f"accepted the {most_pieces} pieces the scan can hold"
        min_mm3 = settings.next_fragment_mm3 if found else settings.first_fragment_mm3
        origin: tuple[np.ndarray, np.ndarray] | None = None  # the fragment found and its patch corner
        # 1) Follow the trail: where the last vertebra was, then half a patch further down.
        if current is not None:
            for shift in (0, settings.patch_size // 2):
                origin = look(walker.clamp(current - np.array([0, 0, shift])), min_mm3)
                if origin is not None:
                    break
        # 2) Trail lost (or not yet found): slide through the remaining search positions.
        while origin is None and next_search < len(positions):
            centre = positions[next_search]
            next_search += 1
            progress(next_search / len(positions), f"searching ({len(found)} vertebrae so far)")
            if worth_searching(centre):
                if walker.predict_batch is not None:
                    coming = (p for p in positions[next_search:] if worth_searching(p))
                    walker.predict_ahead([centre, *itertools.islice(coming, settings.search_batch - 1)])
                origin = look(centre, min_mm3)
        if origin is None:
            return "reached the end of the scan"

        fragment, corner = origin
        fragment_centre = corner + np.argwhere(fragment).mean(axis=0)
        vertebra = _refine_and_accept(walker, walker.clamp(fragment_centre), min_mm3, origin)
        if vertebra is None:
            current = None  # the fragment vanished on closer look: keep searching
            continue
        found.append(vertebra)
        current = vertebra.centroid
        progress(max(next_search / len(positions), 0.0), f"found vertebra {len(found)}")


def _refine_and_accept(
    walker: _Walker, centre: np.ndarray, min_mm3: float, origin: tuple[np.ndarray, np.ndarray],
) -> FoundVertebra | None:
    """Centre the patch on the fragment, then claim its mask and remember the mask's sure part.

    ``origin`` is the fragment that led here and its patch corner; if the fragment vanishes on closer look,
    it and every fragment followed are rejected (see ``_Walker.reject``)."""
    settings = walker.settings
    history = [centre]
    seen = [origin]

    def give_up() -> None:
        for fragment, corner in seen:
            walker.reject(fragment, corner)

    for _ in range(settings.max_refinement_steps):
        corner, prediction, _ = walker.run(centre)
        fragment = walker.new_fragment(prediction, corner, min_mm3)
        if fragment is None:
            give_up()
            return None
        seen.append((fragment, corner))
        moved_to = walker.clamp(corner + np.argwhere(fragment).mean(axis=0))
        history.append(moved_to)
        if np.linalg.norm(moved_to - centre) <= settings.converged_voxels:
            break
        centre = moved_to
    else:
        # No convergence after the step limit: settle between the last two positions.
        centre = walker.clamp((history[-1] + history[-2]) / 2)
    corner, prediction, memory = walker.run(centre)
    fragment = walker.new_fragment(prediction, corner, min_mm3)
    if fragment is None or not walker.is_bone(fragment, corner):
        give_up()
        return None
    # The whole new mask is claimed (a vertebra may fall apart into pieces at coarse resolution),
    # including fringe voxels of the vertebra above; its sure part joins the memory. The
    # probability is kept only around the mask, for smooth upsampling.
    mask = (prediction.probability > MASK_PROBABILITY) & ~memory
    support = ndimage.binary_dilation(mask, iterations=SUPPORT_MARGIN_VOXELS) & ~memory
    probability = np.where(support, prediction.probability, 0.0).astype(np.float16)
    overlap = overlap_slices(corner, settings.patch_size, walker.memory.shape)
    if overlap is None:
        return None
    walker.remember(overlap, mask, mask & (prediction.probability > settings.memory_probability))
    return FoundVertebra(
        corner=corner,
        probability=probability,
        voxel_count=int(fragment.sum()),
        completeness=prediction.completeness,
        position=prediction.position,
        centroid=corner + np.argwhere(fragment).mean(axis=0),
    )
