"""Disc labelling of one MRI: slab -> network -> chain decoding -> left-right refinement -> DiscsResult."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..checks import check_input
from ..choices import DeviceChoice, Task
from ..errors import InputError
from ..progress import ProgressCallback, no_progress
from ..results import DiscNaming, DiscRecord, DiscsResult
from ..volume import Volume
from .decode import UNANCHORED_WARNING, Decoded, DecodeSettings, decode_chain, heatmap_peaks
from .slab import MAX_LATERAL_SHIFT_MM, Slab, extract_slab, refine_lateral, without_outliers
from .targets import output_to_input

if TYPE_CHECKING:  # torch loads with the model, not with this module
    from ..networks.disc_model import DiscModel

__all__ = ["label_discs", "read_discs", "SlabReading", "spine_plane"]

log = logging.getLogger(__name__)

# The mid-plane found from edges can lie on the pedicles of a scan whose spine is off its centre, and a spine
# leaning to one side leaves any sagittal plane. The slab is cut again through the discs' own left-right
# centres when, somewhere along them, these lie at least this far from the slab's plane, at most this many
# times. With at least TILT_MIN_DISCS discs the new plane follows their line, tilted at most TILT_MAX_DEG from
# sagittal; a disc whose centre lies more than TILT_OUTLIER_MM off that line does not pull it.
RECENTRE_MIN_SHIFT_MM = 2.0
RECENTRE_PASSES = 2
TILT_MIN_DISCS = 3
TILT_MAX_DEG = 20.0
TILT_OUTLIER_MM = 5.0
# A tall field of view (a whole spine) fits the 256-pixel slab only with coarse pixels (PAM50: 2.2 mm, heatmap
# pixels of 8.8 mm). Above FINE_READ_ABOVE_MM the discs' positions, not their names, are read again on windows
# with FINE_PIXEL_MM pixels (the middle of the training slabs' 0.7-1.6 mm): each disc moves to the nearest peak
# of the windows' strongest channel within FINE_REACH_MM (about half the shortest disc spacing below C2).
FINE_READ_ABOVE_MM = 1.6
FINE_PIXEL_MM = 1.0
FINE_REACH_MM = 10.0
TRANSITIONAL_WARNING = ("a disc-like junction lies below L5/S1 ({where}): the S1/S2 remnant of a young sacrum or a "
                        "lumbosacral transitional vertebra (a lumbarised S1); the discs are named counting up from the "
                        "disc above it as L5/S1 and it is left unnamed; check the count against a scan that shows the "
                        "ribs or C2")


@dataclass(frozen=True)
class SlabReading:
    """The slab the discs were read on, the decoded discs, and each disc's own centre in 3D (RAS mm)."""

    slab: Slab
    decoded: Decoded
    centres_ras: np.ndarray  # (N, 3), the decoded discs moved left-right onto the centre of each disc


def read_discs(volume: Volume, heatmaps_of: Callable[[np.ndarray], np.ndarray], size: int, thickness_mm: float,
               stride: int, settings: DecodeSettings = DecodeSettings()) -> SlabReading:
    """Cut the slab, run the network (``heatmaps_of``), decode, and re-cut through the discs found.

    The first slab lies on the plane of :func:`~spineseg.discs.slab.find_midsagittal_x`. The discs found on it
    are centred left-right in 3D (:func:`~spineseg.discs.slab.refine_lateral`); when these centres lie
    ``RECENTRE_MIN_SHIFT_MM`` or more away from the slab's plane, the slab is cut again through them (see
    :func:`spine_plane`) and read again; a re-cut slab on which fewer discs are found is not kept. Inference and
    the trainer's validation both read scans through here. Intensities far beyond the scan's percentiles are
    clipped first (:func:`~spineseg.discs.slab.without_outliers`).
    """
    volume = without_outliers(volume)
    plane, slope, best = None, 0.0, None
    for _ in range(RECENTRE_PASSES + 1):
        slab = extract_slab(volume, size=size, thickness_mm=thickness_mm, plane_x=plane, lateral_slope=slope)
        decoded = decode_chain(heatmaps_of(slab.image), slab.slab_to_ras, slab.pixel_mm, stride, settings,
                               inside=slab.inside)
        if best is not None and len(decoded.discs) < len(best.decoded.discs):
            break  # the re-cut slab shows fewer discs: it is not nearer their centre
        centres = (refine_lateral(volume, np.array([disc.position_ras for disc in decoded.discs]))
                   if decoded.discs else np.zeros((0, 3)))
        best = SlabReading(slab, decoded, centres)
        if not decoded.discs:
            break
        along = centres[:, 2]
        # A centre moved the refinement's whole way is at or beyond its search's edge: it may not tilt the plane.
        trusted = np.abs(centres[:, 0] - slab.plane_r(along)) < MAX_LATERAL_SHIFT_MM - 0.5
        plane, slope = spine_plane(centres, slab.plane_s, trusted)
        moved = plane + slope * (along - slab.plane_s) - slab.plane_r(along)
        if np.abs(moved).max() < RECENTRE_MIN_SHIFT_MM:
            break
        log.debug("discs centred up to %.1f mm from the slab (plane R = %.1f mm, %.1f mm per 100 mm head to foot): "
                  "cutting it again", float(np.abs(moved).max()), plane, 100 * slope)
    if best.slab.pixel_mm > FINE_READ_ABOVE_MM and best.decoded.discs:
        decoded = _placed_on_finer_windows(volume, best, heatmaps_of, size, thickness_mm, stride, settings)
        centres = refine_lateral(volume, np.array([disc.position_ras for disc in decoded.discs]))
        best = SlabReading(best.slab, decoded, centres)
    return best


def spine_plane(centres_ras: np.ndarray, plane_s: float, trusted: np.ndarray | None = None) -> tuple[float, float]:
    """The plane through the discs' left-right centres: (R at head-foot position ``plane_s``, R per mm of S).

    A sagittal plane through their median, unless at least ``TILT_MIN_DISCS`` trusted discs (all by default) lie
    along a tilted line. Where a sagittal slab only grazes a leaning spine, the discs there are centred far off,
    so the line is the one through two discs that the most discs lie within ``TILT_OUTLIER_MM`` of (its tilt at
    most ``TILT_MAX_DEG``), then fitted to those discs by least squares. It is taken when it leaves the sagittal
    plane by ``RECENTRE_MIN_SHIFT_MM`` or more within their span (a straight spine's scatter of centres does not
    tilt its slab).
    """
    centres = np.atleast_2d(np.asarray(centres_ras, dtype=float))
    sagittal = float(np.median(centres[:, 0])), 0.0
    if len(centres) < TILT_MIN_DISCS:
        return sagittal
    trusted = np.ones(len(centres), dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool)
    centres = centres[trusted]
    if len(centres) < TILT_MIN_DISCS:
        return sagittal
    along, across = centres[:, 2] - plane_s, centres[:, 0]
    limit = float(np.tan(np.radians(TILT_MAX_DEG)))
    best_kept, best_spread = None, np.inf
    for first, second in zip(*np.triu_indices(len(centres), k=1)):
        if abs(along[second] - along[first]) < 1.0:
            continue
        slope = (across[second] - across[first]) / (along[second] - along[first])
        if abs(slope) > limit:
            continue
        residual = np.abs(across - across[first] - slope * (along - along[first]))
        kept = residual <= TILT_OUTLIER_MM
        spread = float(residual[kept].sum())
        if best_kept is None or (kept.sum(), -spread) > (best_kept.sum(), -best_spread):
            best_kept, best_spread = kept, spread
    if best_kept is None or best_kept.sum() < TILT_MIN_DISCS:
        return sagittal
    slope, intercept = (float(value) for value in np.polyfit(along[best_kept], across[best_kept], 1))
    slope = float(np.clip(slope, -limit, limit))
    leaves_by = np.abs(intercept + slope * along[best_kept] - sagittal[0]).max()
    return (intercept, slope) if leaves_by >= RECENTRE_MIN_SHIFT_MM else sagittal


def _placed_on_finer_windows(volume: Volume, reading: SlabReading, heatmaps_of: Callable[[np.ndarray], np.ndarray],
                             size: int, thickness_mm: float, stride: int, settings: DecodeSettings) -> Decoded:
    """The decoded discs of a coarse slab, each moved to the nearest disc peak of finer windows (same names)."""
    positions = np.array([disc.position_ras for disc in reading.decoded.discs])
    span = size * FINE_PIXEL_MM
    top, bottom = positions[:, 2].max(), positions[:, 2].min()
    count = int(np.ceil((top - bottom) / (0.6 * span))) + 1
    centres_s = np.linspace(top - 0.3 * span, bottom + 0.3 * span, count) if top - bottom > 0.4 * span \
        else [(top + bottom) / 2]
    front_back = float(np.median(positions[:, 1]))
    peaks = []
    for centre_s in centres_s:
        try:
            window = extract_slab(volume, size=size, thickness_mm=thickness_mm, plane_x=reading.slab.plane_x,
                                  window=(front_back, centre_s, FINE_PIXEL_MM),
                                  lateral_slope=reading.slab.lateral_slope)
        except InputError:
            continue  # the window hardly cuts the scan (discs placed in the padding): nothing to place them on
        found = heatmap_peaks(heatmaps_of(window.image).max(axis=0), settings.min_peak)
        at = np.array([position for _, position in found]).reshape(-1, 2)
        peaks.extend(window.pixel_to_ras(output_to_input(at, stride)))
    if not peaks:
        return reading.decoded
    peaks = np.array(peaks)
    moved = []
    for disc, position in zip(reading.decoded.discs, positions):
        distance = np.hypot(peaks[:, 1] - position[1], peaks[:, 2] - position[2])
        if distance.min() <= FINE_REACH_MM:
            nearest = peaks[int(np.argmin(distance))]
            position = np.array([position[0], nearest[1], nearest[2]])
        moved.append(DiscRecord(disc.number, tuple(float(x) for x in position), disc.confidence))
    return Decoded(moved, reading.decoded.anchors, reading.decoded.below_sacrum)


def label_discs(volume: Volume, model: "DiscModel | str | os.PathLike | None" = None,
                device: DeviceChoice | str = DeviceChoice.AUTO,
                progress: ProgressCallback = no_progress,
                settings: DecodeSettings = DecodeSettings(), force_modality: bool = False) -> DiscsResult:
    """Find and name the intervertebral discs of one MRI.

    Args:
        volume: T1w or T2w MRI, any orientation and spacing.
        model: a loaded :class:`DiscModel`, a bundled model's name, a manifest or weights path,
            or None (the bundled default).
        device: "auto" (GPU when available), "cpu" or "cuda".
        progress: callback (fraction, message); may raise CancelledError.
        settings: decoder settings.
        force_modality: run even if the intensities say this is a CT.

    Returns:
        DiscsResult with discs head to foot (RAS mm), the slab, slab_to_ras, the input's warnings (and one
        when no anchor was in view) and how the names were counted (``naming``).

    Raises:
        InputError: the image cannot be used (see :func:`spineseg.checks.check_input`).
    """
    warnings = check_input(volume, Task.DISCS, force_modality)
    progress(0.0, "loading the disc model")
    from ..model_store import load_model

    model = load_model(Task.DISCS, model, device)
    progress(0.1, "reading the discs on the mid-sagittal slab")
    reading = read_discs(volume, model.heatmaps, model.settings.input_size, model.settings.slab_thickness_mm,
                         model.settings.output_stride, settings)
    slab, decoded = reading.slab, reading.decoded
    progress(0.9, "labelling the discs")
    if decoded.discs and not decoded.anchored:
        warnings = [*warnings, UNANCHORED_WARNING]
    if decoded.below_sacrum:
        where = ", ".join(f"S {position[2]:.0f} mm" for position in decoded.below_sacrum)
        warnings = [*warnings, TRANSITIONAL_WARNING.format(where=where)]
    # The slab fixes front-back and head-foot; each disc's left-right position is its own centre in 3D.
    discs = [DiscRecord(d.number, tuple(float(x) for x in p), d.confidence)
             for d, p in zip(decoded.discs, reading.centres_ras)]
    log.info("found %d discs: %s (%s)", len(discs), ", ".join(d.name for d in discs),
             f"counted from {decoded.anchor}" if decoded.anchored else "unanchored")
    progress(1.0, f"found {len(discs)} discs")
    naming = DiscNaming(decoded.anchor, float(np.mean([disc.confidence for disc in discs])) if discs else None)
    return DiscsResult(discs=discs, slab=slab.image, slab_to_ras=slab.slab_to_ras, warnings=warnings, naming=naming)
