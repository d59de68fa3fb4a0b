"""The intervertebral disc planes of a CT, read from its physics along the column of vertebral bodies.

The bodies lie in front of the spinal canal (:mod:`.frame`). The body line runs through them: from each point
of the canal's centre line, the middle of the bone in front of it. Along that line, the mean Hounsfield units
of a small cross-section (radius ``SECTION_RADIUS_MM``, across the spine) make a profile whose bright
peaks are the endplates: each disc lies between the lower endplate of one body and the upper endplate of the
next. Whether the disc itself reads darker than marrow (dense marrow, thick lumbar discs) or not (fatty
marrow, thin thoracic discs at coarse slices, where the two endplates blur into one bright peak), the
endplates are there, so the detector models their sequence rather than the disc's own contrast:

- a disc is a pair of peaks (lower endplate, upper endplate) at most ``DISC_MAX_MM`` apart, or one peak where
  the two have merged;
- between two discs lies a body, ``BODY_MM`` long between its endplates and longer than the discs either side;
  a pair nearly as long as a body must hold something other than the bodies' marrow (else it is a body seen
  between two endplates);
- neighbouring vertebrae have similar heights, so the distance from disc to disc changes slowly.

A dynamic programme over the peaks picks the chain of discs that uses the brightest endplates under these
rules. The rules come from anatomy (the heights of discs and bodies); none is set by one scan's slice thickness
or marrow density. Measured figures: docs/vertebrae-physics.md, section 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..volume import Volume
from .frame import SpineFrame

__all__ = ["DiscPlane", "DiscScore", "find_disc_planes", "body_line", "label_transitions", "score_disc_planes"]

# The body line: the centroid of bone in a strip in front of the canal, smoothed along the spine.
BODY_BONE_HU = 150.0
BODY_SEARCH_MM = (8.0, 60.0)  # from the canal's centre, forwards
BODY_STRIP_HALF_WIDTH_MM = 4.0
BODY_SMOOTHING_MM = 10.0
TANGENT_SMOOTHING_MM = 5.0
# The canal line is carried on this far beyond each of its ends (a disc at the line's end has an endplate
# beyond it), where the scan holds the section: straight on from the line through its last END_FIT_MM,
# leaving out its last END_TRIM_MM (the frame's smoothing bends them towards the scan's long axis).
EXTENSION_MM = 15.0
END_TRIM_MM = 8.0
END_FIT_MM = 15.0
# The profile: mean HU of a disc of this radius across the body line, every STEP_MM.
SECTION_RADIUS_MM = 8.0
STEP_MM = 1.0
PROFILE_SMOOTHING_MM = 1.0
# Endplate peaks: local maxima at least PEAK_MIN_HU above the profile's running median (a window longer than
# a disc and a body's half, so the median is the marrow's level).
BASELINE_WINDOW_MM = 31.0
PEAK_MIN_HU = 15.0
# A disc's two endplate peaks lie at most this far apart (lumbar discs of 10-12 mm plus blur on 3 mm slices).
DISC_MAX_MM = 20.0
# A body between its endplate peaks (cervical 10-15 mm, lumbar up to 30 mm, plus margins).
BODY_MM = (8.0, 45.0)
# A body is longer than BODY_OVER_DISC times each neighbouring disc's endplate spacing (thoracic 3-6 mm discs
# against 15-25 mm bodies; lumbar 10-12 against 25-30; blur lengthens discs and shortens bodies).
BODY_OVER_DISC = 0.8
# A pair of peaks longer than this share of the body beside it must differ from that body's marrow by
# MARROW_CONTRAST_HU somewhere between them.
LONG_DISC_SHARE = 0.85
MARROW_CONTRAST_HU = 30.0
# Disc to disc (one vertebra's pitch).
PITCH_MM = (12.0, 55.0)
# A merged peak counts for half a pair and must be clear of the small bumps in marrow; peak heights are in
# units of the profile's typical endplate peak (75th percentile of the peaks' heights).
MERGED_WEIGHT = 0.5
MERGED_COST = 0.15
TYPICAL_PEAK_PERCENTILE = 75.0
# Neighbouring pitches may differ by 10 % freely; beyond, each unit of log ratio costs this much.
PITCH_TOLERANCE = 0.1
PITCH_CHANGE_COST = 5.0
# A plane this close (along the body line) to a reference disc found it.
SCORE_WITHIN_MM = 4.0
# A section with less than this share inside the scan is not profiled.
MIN_INSIDE_SHARE = 0.5


@dataclass(frozen=True)
class DiscPlane:
    """One intervertebral disc: its centre on the body line (RAS mm) and the unit normal of its plane (the
    spine's direction there, that of the canal beside it, pointing to the foot)."""

    centre: np.ndarray
    normal: np.ndarray


@dataclass(frozen=True)
class _Disc:
    upper: int  # profile index of the lower endplate of the body above (head side)
    lower: int  # profile index of the upper endplate of the body below; == upper where the two merged
    score: float

    @property
    def middle(self) -> float:
        return (self.upper + self.lower) / 2

    @property
    def length(self) -> int:
        return self.lower - self.upper


class _Sampler:
    """Trilinear samples of the CT at RAS points; points outside the scan are flagged."""

    def __init__(self, volume: Volume):
        self.array = volume.array
        inverse = np.linalg.inv(volume.affine)
        self.rotation, self.offset = inverse[:3, :3], inverse[:3, 3]

    def __call__(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ijk = points @ self.rotation.T + self.offset
        inside = np.all((ijk >= -0.5) & (ijk <= np.array(self.array.shape) - 0.5), axis=1)
        values = ndimage.map_coordinates(self.array, ijk.T, order=1, mode="nearest", output=np.float32)
        values[~inside] = -1000.0  # air
        return values, inside


def _canal_every_mm(canal: np.ndarray) -> np.ndarray:
    """The canal's centre line resampled every ``STEP_MM`` along its length, carried on straight beyond each
    end to ``EXTENSION_MM``. The frame's smoothing bends the line's last few millimetres towards the scan's
    long axis, so those are replaced by the straight line through the next ``END_FIT_MM``."""
    length = np.linalg.norm(np.diff(canal, axis=0), axis=1)
    at = np.concatenate([[0.0], np.cumsum(length)])
    # A short line (a few vertebrae) keeps its ends and fits over what it has.
    trim = END_TRIM_MM if at[-1] >= 2 * (END_TRIM_MM + END_FIT_MM) else 0.0
    fit = min(END_FIT_MM, at[-1] / 2)
    if fit <= 0:
        return canal[:1].copy()
    s = np.arange(-EXTENSION_MM, at[-1] + EXTENSION_MM + 1e-6, STEP_MM)
    line = np.stack([np.interp(s, at, canal[:, a]) for a in range(3)], axis=1)
    for end, inwards in ((trim, 1.0), (at[-1] - trim, -1.0)):
        anchor = np.array([np.interp(end, at, canal[:, a]) for a in range(3)])
        further = np.array([np.interp(end + inwards * fit, at, canal[:, a]) for a in range(3)])
        slope = (anchor - further) / fit  # per mm of line, outwards
        beyond = (s < end) if inwards > 0 else (s > end)
        line[beyond] = anchor + np.abs(s[beyond] - end)[:, None] * slope
    return line


def body_line(volume: Volume, frame: SpineFrame) -> tuple[np.ndarray, np.ndarray]:
    """The line through the vertebral bodies in front of the canal and the spine's unit direction (head to
    foot) along it, one point per ``STEP_MM`` of the canal (RAS mm, n x 3 each); empty where no bone lies in
    front of the canal."""
    sample = _Sampler(volume)
    canal = _canal_every_mm(frame.canal)
    forward = np.arange(0.0, BODY_SEARCH_MM[1] + STEP_MM, STEP_MM)
    across = np.array([-BODY_STRIP_HALF_WIDTH_MM, 0.0, BODY_STRIP_HALF_WIDTH_MM])
    offsets = np.array([[x, y, 0.0] for y in forward for x in across])  # R and A in RAS
    values, _ = sample((canal[:, None, :] + offsets[None]).reshape(-1, 3))
    bone = values.reshape(len(canal), len(forward), len(across)).mean(axis=2) >= BODY_BONE_HU
    bone[:, forward < BODY_SEARCH_MM[0]] = False
    has_bone = bone.any(axis=1)
    if has_bone.sum() < 2:
        return np.zeros((0, 3)), np.zeros((0, 3))
    centroid = np.array([forward[row].mean() if row.any() else np.nan for row in bone])
    rows = np.arange(len(canal))
    depth = np.interp(rows, rows[has_bone], centroid[has_bone])
    line = canal.copy()
    line[:, 1] += ndimage.gaussian_filter1d(depth, BODY_SMOOTHING_MM / STEP_MM, mode="nearest")
    # The column of bodies runs beside the canal, and the canal is the better drawn of the two (the bone in
    # front of a vertebra that the scan cuts shifts the body line there), so the direction is the canal's.
    smooth = ndimage.gaussian_filter1d(canal, TANGENT_SMOOTHING_MM / STEP_MM, axis=0, mode="nearest")
    direction = np.gradient(smooth, axis=0)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return line, direction


def _section_profile(sample: _Sampler, line: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean HU of a disc of ``SECTION_RADIUS_MM`` across the line at each point, and whether the scan holds
    the section."""
    r = SECTION_RADIUS_MM
    grid = np.arange(-r, r + 1e-6, STEP_MM)
    uv = np.array([(u, v) for u in grid for v in grid if u * u + v * v <= r * r])
    first = np.cross(direction, [1.0, 0.0, 0.0])
    first /= np.maximum(np.linalg.norm(first, axis=1, keepdims=True), 1e-9)
    second = np.cross(direction, first)
    points = line[:, None, :] + uv[None, :, :1] * first[:, None, :] + uv[None, :, 1:] * second[:, None, :]
    values, inside = sample(points.reshape(-1, 3))
    values, inside = values.reshape(len(line), len(uv)), inside.reshape(len(line), len(uv))
    count = inside.sum(axis=1)
    mean = np.where(inside, values, 0.0).sum(axis=1) / np.maximum(count, 1)  # over the scan's part only
    return mean, count >= MIN_INSIDE_SHARE * len(uv)


def _endplate_peaks(profile: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Local maxima of the profile above its running median, and every point's height above that median in
    units of a typical endplate peak."""
    window = int(round(BASELINE_WINDOW_MM / STEP_MM)) | 1
    height = profile - ndimage.median_filter(profile, size=window, mode="reflect")
    last = len(profile) - 1
    peaks = [i for i in range(len(profile))
             if (i == 0 or profile[i] >= profile[i - 1]) and (i == last or profile[i] > profile[i + 1])
             and height[i] > PEAK_MIN_HU]
    if not peaks:
        return [], height
    return peaks, height / np.percentile(height[peaks], TYPICAL_PEAK_PERCENTILE)


def _candidate_discs(peaks: list[int], height: np.ndarray) -> list[_Disc]:
    """Every peak as a merged disc and every pair of peaks close enough to be one disc's two endplates."""
    longest = int(round(DISC_MAX_MM / STEP_MM))
    discs = []
    for n, upper in enumerate(peaks):
        discs.append(_Disc(upper, upper, MERGED_WEIGHT * height[upper] - MERGED_COST))
        for lower in peaks[n + 1:]:
            if lower - upper > longest:
                break
            discs.append(_Disc(upper, lower, height[upper] + height[lower]))
    return sorted(discs, key=lambda d: d.middle)


def _body_between(above: _Disc, below: _Disc, profile: np.ndarray) -> bool:
    """Whether a vertebral body can lie between two discs (see the module's notes)."""
    body = below.upper - above.lower
    if not BODY_MM[0] <= body * STEP_MM <= BODY_MM[1] or body <= BODY_OVER_DISC * max(above.length, below.length):
        return False
    if not PITCH_MM[0] <= (below.middle - above.middle) * STEP_MM <= PITCH_MM[1]:
        return False
    quarter = body // 4
    marrow = float(np.median(profile[above.lower + quarter:below.upper - quarter + 1]))
    for disc in (above, below):
        if disc.length > LONG_DISC_SHARE * body:
            between = profile[disc.upper:disc.lower + 1]
            if abs(float(between.min()) - marrow) < MARROW_CONTRAST_HU:
                return False
    return True


def _disc_chain(discs: list[_Disc], profile: np.ndarray) -> list[_Disc]:
    """The best chain of discs head to foot: the sum of their scores less the cost of uneven pitches
    (dynamic programming over pairs of neighbouring discs, since a pitch's change needs three discs).

    A merged peak may end the chain only where the profile shows a body's length beyond it: at the line's end
    one endplate of a disc whose other endplate lies beyond the line looks the same."""
    shortest = BODY_MM[0] / STEP_MM

    def can_end(disc: _Disc) -> bool:
        return disc.length > 0 or min(disc.upper, len(profile) - 1 - disc.lower) >= shortest

    best: dict[tuple[int, int], tuple[float, int | None]] = {}
    into: list[list[int]] = [[] for _ in discs]
    for j, below in enumerate(discs):
        for i in range(j):
            above = discs[i]
            if above.lower >= below.upper or not _body_between(above, below, profile):
                continue
            pitch = below.middle - above.middle
            score, back = (above.score + below.score if can_end(above) else -np.inf), None
            for k in into[i]:
                change = abs(np.log(pitch / (above.middle - discs[k].middle)))
                candidate = best[(k, i)][0] + below.score - PITCH_CHANGE_COST * max(0.0, change - PITCH_TOLERANCE)
                if candidate > score:
                    score, back = candidate, k
            best[(i, j)] = (score, back)
            into[j].append(i)
    ends = {key: value for key, value in best.items() if can_end(discs[key[1]]) and np.isfinite(value[0])}
    if not ends:
        single = max((d for d in discs if can_end(d)), key=lambda d: d.score, default=None)
        return [single] if single is not None and single.score > 0 else []
    (i, j), (_, back) = max(ends.items(), key=lambda item: item[1][0])
    chain = [j, i]
    while back is not None:
        chain.append(back)
        i, back = back, best[(back, i)][1]
    return [discs[n] for n in reversed(chain)]


def find_disc_planes(volume: Volume, frame: SpineFrame) -> list[DiscPlane]:
    """The intervertebral disc planes of a CT along its body column, head to foot (see the module's notes).

    Args:
        volume: CT in Hounsfield units, any orientation and spacing.
        frame: the spine's frame of the same CT (:func:`.frame.find_spine_frame`).
    """
    line, direction = body_line(volume, frame)
    if len(line) < 3:
        return []
    profile, held = _section_profile(_Sampler(volume), line, direction)
    held_rows = np.flatnonzero(held)
    if len(held_rows) < 3:
        return []
    keep = slice(held_rows[0], held_rows[-1] + 1)
    line, direction = line[keep], direction[keep]
    profile = ndimage.gaussian_filter1d(profile[keep], PROFILE_SMOOTHING_MM / STEP_MM)
    peaks, height = _endplate_peaks(profile)
    chain = _disc_chain(_candidate_discs(peaks, height), profile)
    planes = []
    for disc in chain:
        at = disc.middle
        low, frac = int(np.floor(at)), at - np.floor(at)
        high = min(low + 1, len(line) - 1)
        normal = (1 - frac) * direction[low] + frac * direction[high]
        planes.append(DiscPlane(centre=(1 - frac) * line[low] + frac * line[high],
                                normal=normal / np.linalg.norm(normal)))
    return planes


def label_transitions(labels: Volume, line: np.ndarray) -> np.ndarray:
    """Where a label map's vertebrae change along ``line`` (RAS mm, n x 3, one point per ``STEP_MM``, head to
    foot): for each pair of neighbouring labelled runs whose label grows (the next vertebra down, in VerSe
    numbers), the index half-way between them (the disc of a reference label map, for scoring)."""
    inverse = np.linalg.inv(labels.affine)
    ijk = line @ inverse[:3, :3].T + inverse[:3, 3]
    along = ndimage.map_coordinates(labels.array, ijk.T, order=0, mode="constant", cval=0)
    middles, last, last_at = [], 0, 0
    for at, label in enumerate(along):
        if label > 0:
            if last > 0 and label > last:
                middles.append((last_at + at) / 2)
            last, last_at = label, at
    return np.array(middles, float)


@dataclass(frozen=True)
class DiscScore:
    """Disc planes against a reference label map: reference discs, those with a plane within
    ``SCORE_WITHIN_MM`` along the body line, planes inside the labelled stretch farther than that from every
    reference disc (false), and the median distance (mm) from a reference disc to its nearest plane."""

    reference: int
    within: int
    false: int
    median_error_mm: float


def score_disc_planes(planes: list[DiscPlane], volume: Volume, frame: SpineFrame, labels: Volume) -> DiscScore:
    """How well ``planes`` (of ``volume``) match the vertebra changes of a reference label map ``labels``."""
    line, _ = body_line(volume, frame)
    reference = label_transitions(labels, line) * STEP_MM
    found = np.array([np.argmin(np.linalg.norm(line - plane.centre, axis=1)) for plane in planes], float) * STEP_MM
    errors = np.array([np.min(np.abs(found - r)) if len(found) else np.inf for r in reference])
    inverse = np.linalg.inv(labels.affine)
    ijk = np.round(line @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    held = np.all((ijk >= 0) & (ijk < labels.shape), axis=1)
    labelled = np.flatnonzero(held & (labels.array[tuple(np.where(held[:, None], ijk, 0).T)] > 0)) * STEP_MM
    inside = [f for f in found if len(labelled) and labelled[0] <= f <= labelled[-1]]
    false = sum(1 for f in inside if not len(reference) or np.min(np.abs(reference - f)) > SCORE_WITHIN_MM)
    return DiscScore(len(reference), int(np.sum(errors <= SCORE_WITHIN_MM)), false,
                     float(np.median(errors)) if len(errors) else float("nan"))
