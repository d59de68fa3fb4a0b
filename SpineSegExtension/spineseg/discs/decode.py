"""Heatmaps -> labelled disc points, with a chain model instead of channel indices.

1. Candidates: local maxima of every channel above ``min_peak``, refined to
   sub-pixel by a parabola through the peak and its neighbours.
2. Sites: candidates closer than ``merge_mm`` are one place in the image (a
   disc often lights up in neighbouring channels too); each site gets a score
   per disc number, the heatmap value of that number's channel there.
3. Labels: sites are ordered head to foot and a Viterbi-style dynamic
   programme picks a subsequence of sites and strictly increasing disc
   numbers that maximises

       sum(score(site, number) - threshold)
       - spacing_weight * sum(log(distance / (scale * expected distance))^2 / spacing_sigma^2)
       - skip_penalty * (number of disc numbers skipped between chosen sites)
       - step_weight * sum(max(0, step angle from head-foot - step_free_deg)^2 / step_sigma_deg^2)

   where the expected distance between discs n and m adds up typical adult
   disc-to-disc distances (``anatomy.level_size``) and ``scale``
   (one per image, the best of ``DecodeSettings.scales``) absorbs the size of
   the person, so that only the pattern of the gaps, not their absolute
   size, pulls the labels. A missed disc is
   a skipped number whose gap the spacing prior accepts; a spurious peak is a
   site left out. The number of discs is never given; the cost is
   O(sites^2 * numbers^2 * scales), polynomial.
4. Anchors: the network's channel, i.e. its guess of the level from how a
   disc looks, is not trusted to name a chain on its own. C2 and the sacrum
   fix the count: when one is in view (:func:`find_anchors`) the chain is
   decoded again, its first disc held to C1/C2 or C2/C3 (C2 anchor) or its
   last to L5/S1 (sacrum anchor), and every disc is named by counting from
   the anchor (the top disc C1/C2 or C2/C3 by a clear lead of one of those
   two channels there), with the channel only a weak tie-breaker
   (:func:`counting_scores`). A chain with neither anchor in view keeps the
   network's names, at lowered confidence, and says so (``Decoded.anchored``).
5. The lumbosacral junction: the sacrum below L5/S1 is one fused bone, so no
   disc lies below S1. Where the chain's two lowest sites both look like
   L5/S1 to the network (its strongest channel there), the upper one is L5/S1
   and the lower one a junction inside the sacrum (the S1/S2 remnant of a
   young sacrum, or the disc below a lumbarised S1); it is left out of the
   count and reported (``Decoded.below_sacrum``), as is any other site below
   L5/S1 that looks like L5/S1 about one disc spacing further down: a
   transitional vertebra is flagged, never silently counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..anatomy import level_size
from ..labels import DISC_NUMBERS
from ..results import DiscRecord
from .targets import N_CHANNELS, output_to_input

__all__ = ["Candidate", "find_candidates", "heatmap_peaks", "expected_spacing_mm", "label_chain", "decode_heatmaps",
           "decode_chain", "counting_scores", "find_anchors", "Anchor", "Decoded", "DecodeSettings",
           "UNANCHORED_WARNING", "split_sacral_site", "sites_below_sacrum_disc", "extended_upward"]

UNANCHORED_WARNING = ("neither C2 nor the sacrum is in view: the disc names are the network's guess of the levels and "
                      "may be off by one or more levels (confidence lowered); check them against a scan that shows C2 "
                      "or the sacrum")


class Anchor(str, Enum):
    """A landmark that fixes the count of discs: C2 at the head end, the sacrum at the foot end."""

    C2 = "C2"
    SACRUM = "sacrum"


# A chain anchored at both ends spans at least this share of the shortest whole spine of the spacing prior.
WHOLE_SPINE_SHARE = 0.7
# Disc numbers a chain anchored at each end may start (C2) or end (sacrum) with.
ANCHOR_END_NUMBERS = {Anchor.C2: (2, 3), Anchor.SACRUM: (25,)}


@dataclass(frozen=True)
class DecodeSettings:
    """Decoder knobs (defaults chosen on validation phantoms, seeds 2000-2001, never on test scans)."""

    min_peak: float = 0.1
    threshold: float = 0.2
    merge_mm: float = 6.0
    spacing_weight: float = 1.0
    spacing_sigma: float = 0.5
    skip_penalty: float = 0.15
    # Discs follow the spine head to foot: a step between chosen discs steeper than step_free_deg from the
    # head-foot axis (phantoms: at most 48 deg, 99 % under 29 deg) costs step_weight per step_sigma_deg squared
    # beyond it, so a chain cannot zigzag between sites side by side (front and back of the spine).
    step_free_deg: float = 45.0
    step_sigma_deg: float = 15.0
    step_weight: float = 1.0
    max_sites: int = 60
    scales: tuple[float, ...] = (0.8, 0.846, 0.894, 0.946, 1.0, 1.057, 1.118, 1.182, 1.25)  # 0.8-1.25, geometric
    # Anchors. The anchor is the anatomy beyond the chain's end disc (C2's dens and the skull base above C1/C2 or
    # C2/C3; the sacrum below L5/S1): the network reports it by scoring the end disc at least anchor_score in an
    # anchor channel, having seen those surroundings. The anchor must also be inside the image: the scan goes on
    # beyond the end disc for at least anchor_in_view_gaps times the chain's end gap. How far the image goes on
    # is never evidence by itself (a thoracic scan may have plenty of room beyond its end discs).
    anchor_score: float = 0.5
    # Real scans score lower than phantoms: a foot-end disc whose strongest channel is L5/S1 anchors the chain
    # at the sacrum from anchor_floor on (the network's own ranking, free of its calibration). Not at C2: the
    # top of a lumbar scan often looks most like C1/C2 to the network (an end disc with nothing below the
    # vertebra above it in view), which is no skull base.
    anchor_floor: float = 0.25
    anchor_in_view_gaps: float = 0.5
    # The C2 anchor's top disc is C1/C2 or C2/C3 by the spacing prior, unless one of the two channels leads the
    # other there by c2_margin (then it is that one).
    c2_margin: float = 0.2
    # ... or where the network's strongest answer within sacrum_window chain gaps below the last disc is L5/S1's
    # (the sacrum's top seen below a disc the network took for L4/L5).
    sacrum_window: float = 0.5
    # A site below L5/S1 that looks like L5/S1 (its strongest channel), scores at least sacral_share of the
    # L5/S1 disc's strongest channel and lies sacral_reach (times the chain's last gap) further down is a
    # disc-like junction in the sacrum: flagged as possible transitional anatomy.
    sacral_share: float = 0.5
    sacral_reach: tuple[float, float] = (0.7, 1.5)  # an S1 body is 0.7-0.9 of a lumbar disc spacing
    # A site the network answers only weakly (at least min_peak, below threshold) above a chain's top disc is the
    # disc above it when it lies extend_reach times the spacing that the chain's top gap predicts for it (the
    # disc missed at the top of a real lumbar scan; not above a top held by the C2 anchor).
    extend_reach: tuple[float, float] = (0.8, 1.25)
    identity_weight: float = 0.25  # counting from an anchor: weight of the channel (network's level guess)
    unanchored_confidence: float = 0.5  # confidence factor of discs named without an anchor

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be one or more positive factors, got {self.scales!r}")
        if not 0.0 <= self.identity_weight <= 1.0:
            raise ValueError(f"identity_weight must be within 0..1, got {self.identity_weight}")
        if not 0.0 < self.unanchored_confidence <= 1.0:
            raise ValueError(f"unanchored_confidence must be within (0, 1], got {self.unanchored_confidence}")


@dataclass(frozen=True)
class Candidate:
    """A place in the image and its score for every disc number (channel order)."""

    position: np.ndarray  # (row, column) in input pixels, sub-pixel
    scores: np.ndarray  # (N_CHANNELS,)


def _subpixel(heatmap: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Parabola vertex through the peak and its two neighbours, per axis."""
    def offset(minus: float, centre: float, plus: float) -> float:
        denominator = minus - 2 * centre + plus
        return 0.0 if denominator >= -1e-9 else float(np.clip(0.5 * (minus - plus) / denominator, -0.5, 0.5))

    h, w = heatmap.shape
    dr = offset(heatmap[r - 1, c], heatmap[r, c], heatmap[r + 1, c]) if 0 < r < h - 1 else 0.0
    dc = offset(heatmap[r, c - 1], heatmap[r, c], heatmap[r, c + 1]) if 0 < c < w - 1 else 0.0
    return r + dr, c + dc


def heatmap_peaks(heatmap: np.ndarray, min_peak: float) -> list[tuple[float, tuple[float, float]]]:
    """Local maxima (3 x 3) of one heatmap at or above ``min_peak``: (value, sub-pixel (row, column)) each."""
    maxima = (heatmap == ndimage.maximum_filter(heatmap, size=3)) & (heatmap >= min_peak)
    return [(float(heatmap[r, c]), _subpixel(heatmap, int(r), int(c))) for r, c in zip(*np.nonzero(maxima))]


def find_candidates(heatmaps: np.ndarray, stride: int, pixel_mm: float,
                    settings: DecodeSettings = DecodeSettings()) -> list[Candidate]:
    """Local maxima of all channels, merged into sites with one score per channel.

    Args:
        heatmaps: (N_CHANNELS, h, w) network output.
        stride: input pixels per heatmap pixel.
        pixel_mm: input pixel size in mm (for the merge distance).
    """
    if heatmaps.ndim != 3 or heatmaps.shape[0] != N_CHANNELS:
        raise ValueError(f"heatmaps must be ({N_CHANNELS}, h, w), got {heatmaps.shape}")
    peaks = [(value, channel, position) for channel in range(N_CHANNELS)
             for value, position in heatmap_peaks(heatmaps[channel], settings.min_peak)]
    peaks.sort(key=lambda item: -item[0])
    merge_px = settings.merge_mm / pixel_mm / stride
    sites: list[np.ndarray] = []
    for _, _, position in peaks:
        point = np.array(position)
        if all(np.hypot(*(point - site)) > merge_px for site in sites):
            sites.append(point)
        if len(sites) >= settings.max_sites:
            break
    # Score of each number at each site: the channel's maximum within the merge radius.
    h, w = heatmaps.shape[1:]
    radius = max(int(np.ceil(merge_px / 2)), 1)
    candidates = []
    for site in sites:
        r, c = int(round(site[0])), int(round(site[1]))
        window = heatmaps[:, max(r - radius, 0) : min(r + radius + 1, h), max(c - radius, 0) : min(c + radius + 1, w)]
        scores = window.reshape(N_CHANNELS, -1).max(axis=1)
        candidates.append(Candidate(output_to_input(site, stride), np.clip(scores, 0.0, None)))
    return candidates


def _disc_gaps_mm() -> np.ndarray:
    """Typical distance from disc n to disc n+1 (index n - 2), from the typical adult level sizes."""
    gaps = []
    for number in DISC_NUMBERS[:-1]:
        vertebra = level_size(number)
        upper_disc = level_size(number - 1).disc_below
        gaps.append(vertebra.body_height + 0.5 * (upper_disc + vertebra.disc_below))
    return np.array(gaps)


_CUMULATIVE = np.concatenate([[0.0], np.cumsum(_disc_gaps_mm())])


def expected_spacing_mm(first: int, second: int) -> float:
    """Typical distance in mm between disc numbers ``first`` < ``second``."""
    return float(_CUMULATIVE[second - DISC_NUMBERS[0]] - _CUMULATIVE[first - DISC_NUMBERS[0]])


def _steepness_cost(step_mm: np.ndarray, settings: DecodeSettings) -> float:
    """Cost of a (row, column) step whose angle from the head-foot axis exceeds ``settings.step_free_deg``."""
    angle = float(np.degrees(np.arctan2(abs(step_mm[1]), abs(step_mm[0]))))
    excess = max(angle - settings.step_free_deg, 0.0) / settings.step_sigma_deg
    return settings.step_weight * excess**2


def label_chain(positions_mm: np.ndarray, scores: np.ndarray, settings: DecodeSettings = DecodeSettings(),
                start: tuple[int, Sequence[int]] | None = None,
                end: tuple[int, Sequence[int]] | None = None) -> list[tuple[int, int]]:
    """Best chain of (site index, channel) pairs, head to foot.

    The expected distances are those of a typical adult times one unknown
    scale per image (``settings.scales``: people and their discs differ in
    size), so that a small or large spine is not pushed towards the disc
    numbers whose typical spacing happens to match its size. One dynamic
    programme runs for every scale at once and the best chain over all
    scales wins.

    Args:
        positions_mm: (M, 2) site positions in mm, sorted head to foot.
        scores: (M, N_CHANNELS) score of each site for each disc number.
        start: (site, disc numbers): the chain must begin at this site with one of these numbers.
        end: (site, disc numbers): the chain must end at this site with one of these numbers.

    Returns:
        the chosen (site, channel) pairs in head-to-foot order; empty if no
        chain has a positive total.
    """
    m = len(positions_mm)
    if m == 0:
        return []
    n = scores.shape[1]
    unary = scores - settings.threshold
    unary = np.where(scores >= settings.min_peak, unary, -np.inf)
    expected = _CUMULATIVE[None, :n] - _CUMULATIVE[:n, None]  # expected[a, b] from channel a to b
    channel_gap = np.arange(n)[None, :] - np.arange(n)[:, None]
    allowed = channel_gap > 0
    log_scales = np.log(np.asarray(settings.scales, dtype=float))[:, None, None]
    log_expected = np.log(np.where(allowed, expected, 1.0))[None] + log_scales  # (scales, a, b)
    skip = settings.skip_penalty * np.clip(channel_gap - 1, 0, None)
    k = len(settings.scales)
    best = np.full((m, k, n), -np.inf)
    back = np.full((m, k, n, 2), -1, dtype=int)
    starts = np.ones((m, n), dtype=bool)
    if start is not None:
        starts[:] = False
        starts[start[0], [DISC_NUMBERS.index(number) for number in start[1]]] = True
    for i in range(m):
        best[i] = np.where(starts[i], unary[i], -np.inf)  # chain starting here
        for j in range(i):
            step = positions_mm[i] - positions_mm[j]
            distance = float(np.hypot(*step))
            if distance < 1e-6:
                continue
            pair = (-settings.spacing_weight * (np.log(distance) - log_expected) ** 2 / settings.spacing_sigma**2
                    - skip - _steepness_cost(step, settings))
            pair = np.where(allowed, pair, -np.inf)  # pair[s, a, b]: j has channel a, i has channel b
            total = best[j][:, :, None] + pair  # (s, a, b)
            source = np.argmax(total, axis=1)  # (s, b)
            value = np.take_along_axis(total, source[:, None, :], axis=1)[:, 0, :] + unary[i]
            better = value > best[i]
            best[i] = np.where(better, value, best[i])
            back[i][better] = np.column_stack([np.full(better.sum(), j), source[better]])
    if end is not None:
        ends = np.zeros((m, 1, n), dtype=bool)
        ends[end[0], 0, [DISC_NUMBERS.index(number) for number in end[1]]] = True
        best = np.where(ends, best, -np.inf)
    i, scale, c = np.unravel_index(int(np.argmax(best)), best.shape)
    if not np.isfinite(best[i, scale, c]) or best[i, scale, c] <= 0:
        return []
    chain = [(int(i), int(c))]
    while back[i, scale, c, 0] >= 0:
        i, c = int(back[i, scale, c, 0]), int(back[i, scale, c, 1])
        chain.append((i, c))
    return chain[::-1]


def extended_upward(chain: list[tuple[int, int]], positions_mm: np.ndarray, scores: np.ndarray,
                    settings: DecodeSettings = DecodeSettings()) -> list[tuple[int, int]]:
    """The chain with the discs above its top that the network answered too weakly to be chosen, named by counting.

    One disc at a time: the strongest site (at least ``min_peak`` in any channel) that lies above the top disc,
    ``extend_reach`` times the spacing the chain's top gap predicts for the disc above (typical adult spacings,
    scaled to this spine), within the chain's direction (no cost on its step, see ``step_free_deg``), becomes
    the disc numbered one above the top. It stops at C1/C2 or where no site fits. Real lumbar scans often show
    the disc at their top edge only faintly; spacing and direction, not the channel, make it a disc.
    """
    chain = list(chain)
    while len(chain) >= 2 and chain[0][1] > 0:
        (top, channel), (second, second_channel) = chain[0], chain[1]
        number, below = DISC_NUMBERS[channel], DISC_NUMBERS[second_channel]
        gap = float(np.hypot(*(positions_mm[second] - positions_mm[top])))
        predicted = gap * expected_spacing_mm(number - 1, number) / expected_spacing_mm(number, below)
        chosen = {site for site, _ in chain}
        best, best_value = None, 0.0
        for site in range(len(positions_mm)):
            step = positions_mm[top] - positions_mm[site]  # from the site down to the top disc
            distance = float(np.hypot(*step))
            if (site in chosen or step[0] <= 0 or _steepness_cost(step, settings) > 0
                    or not settings.extend_reach[0] * predicted <= distance <= settings.extend_reach[1] * predicted):
                continue
            value = float(scores[site].max())
            if value >= settings.min_peak and value > best_value:
                best, best_value = site, value
        if best is None:
            break
        chain.insert(0, (best, channel - 1))
    return chain


def counting_scores(scores: np.ndarray, identity_weight: float) -> np.ndarray:
    """Scores for naming by counting: each site's disc evidence (its best channel) for every number, less
    ``identity_weight`` times how much weaker the number's own channel is there.

    With weight 0 every site is equally good as every number and only the count and the spacing prior name the
    discs; with weight 1 these are the network's scores.
    """
    strength = scores.max(axis=1, keepdims=True)
    return strength - identity_weight * (strength - scores)


def _room_mm(inside: np.ndarray, row: float, col: float, pixel_mm: float) -> tuple[float, float]:
    """How far (mm) the scan goes on above and below an input pixel, along its column."""
    column = int(np.clip(round(col), 0, inside.shape[1] - 1))
    rows = np.nonzero(inside[:, column])[0]
    if rows.size == 0:
        return 0.0, 0.0
    return max(row - rows.min(), 0.0) * pixel_mm, max(rows.max() - row, 0.0) * pixel_mm


def _claims_anchor(site_scores: np.ndarray, anchor: Anchor, settings: DecodeSettings) -> bool:
    """Whether the network says a site is the end disc next to ``anchor``: an anchor channel at least
    ``anchor_score``, or for the sacrum the strongest channel at least ``anchor_floor`` (see :func:`find_anchors`)."""
    channels = [DISC_NUMBERS.index(number) for number in ANCHOR_END_NUMBERS[anchor]]
    best = float(site_scores[channels].max())
    relative = anchor is Anchor.SACRUM and best >= settings.anchor_floor and best >= float(site_scores.max())
    return best >= settings.anchor_score or relative


def _sacrum_seen_below(positions_px: np.ndarray, scores: np.ndarray, bottom: int, gap_px: float,
                       settings: DecodeSettings) -> bool:
    """Whether the network sees the sacrum right below the chain's last disc: the strongest site within
    ``sacrum_window`` of the chain's last gap below it (head to foot) looks like L5/S1 and scores at least
    ``anchor_floor`` (the network answers the sacrum's top in L5/S1's channel; a thoracic or lumbar disc below
    would answer in its own)."""
    depth = positions_px[:, 0] - positions_px[bottom, 0]
    window = np.nonzero((depth > 0) & (depth <= settings.sacrum_window * gap_px))[0]
    if window.size == 0:
        return False
    strongest = window[int(np.argmax(scores[window].max(axis=1)))]
    return _looks_like_l5_s1(scores[strongest]) and float(scores[strongest].max()) >= settings.anchor_floor


def _c2_end_numbers(site_scores: np.ndarray, settings: DecodeSettings) -> tuple[int, ...]:
    """The numbers a chain's top disc next to the C2 anchor may take: C1/C2 or C2/C3, or only the one whose
    anchor channel scores ``c2_margin`` more there. What lies right above the disc tells them apart (C1's arch
    and the skull base a short way above C1/C2; C2's tall body with the dens above C2/C3); the spacing of the
    discs further down hardly does, as C2/C3 ... C7/T1 are spaced almost alike."""
    first, second = ANCHOR_END_NUMBERS[Anchor.C2]
    difference = float(site_scores[DISC_NUMBERS.index(first)] - site_scores[DISC_NUMBERS.index(second)])
    if abs(difference) < settings.c2_margin:
        return first, second
    return (first,) if difference > 0 else (second,)


def _looks_like_l5_s1(site_scores: np.ndarray) -> bool:
    """The network's strongest channel at a site is L5/S1's (a disc with the sacrum right below it)."""
    return int(np.argmax(site_scores)) == DISC_NUMBERS.index(ANCHOR_END_NUMBERS[Anchor.SACRUM][0])


def split_sacral_site(chain: list[tuple[int, int]], scores: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """The chain without a lowest site that lies in the sacrum, and that site (none or one).

    No disc lies below S1. When the two lowest sites both look like L5/S1 (:func:`_looks_like_l5_s1`), the
    upper is L5/S1 and the lower a junction in the sacrum (S1/S2 remnant, or the disc of a lumbarised S1).
    """
    if len(chain) >= 3 and all(_looks_like_l5_s1(scores[site]) for site, _ in chain[-2:]):
        return chain[:-1], [chain[-1][0]]
    return chain, []


def sites_below_sacrum_disc(positions_mm: np.ndarray, scores: np.ndarray, chain: list[tuple[int, int]],
                            settings: DecodeSettings = DecodeSettings()) -> list[int]:
    """Sites below a chain's L5/S1 disc (its last) that look like L5/S1 too, score at least ``sacral_share`` of
    it, and lie ``sacral_reach`` times the chain's last gap further down: disc-like junctions in the sacrum."""
    if len(chain) < 2:
        return []
    last, before = chain[-1][0], chain[-2][0]
    gap = float(np.hypot(*(positions_mm[last] - positions_mm[before])))
    strongest = float(scores[last].max())
    found = []
    for site in range(len(positions_mm)):
        step = positions_mm[site] - positions_mm[last]
        distance = float(np.hypot(*step))
        if (step[0] > 0 and settings.sacral_reach[0] * gap <= distance <= settings.sacral_reach[1] * gap
                and _looks_like_l5_s1(scores[site]) and scores[site].max() >= settings.sacral_share * strongest):
            found.append(site)
    return found


def find_anchors(positions_px: np.ndarray, scores: np.ndarray, chain: list[tuple[int, int]], inside: np.ndarray,
                 pixel_mm: float, settings: DecodeSettings = DecodeSettings()) -> tuple[Anchor, ...]:
    """The anchors in view at the two ends of a chain.

    An end is anchored when the network scores its end disc at least ``anchor_score`` in an anchor channel
    (C1/C2 or C2/C3 at the top: the dens and the skull base above it; L5/S1 at the foot: the sacrum below
    it), or (the sacrum only) at least ``anchor_floor`` in L5/S1's channel where that is its strongest or
    where the strongest site right below it answers so (:func:`_sacrum_seen_below`), and the anchor lies
    inside the image: beyond the end disc the scan goes on for at least
    ``anchor_in_view_gaps`` times the chain's gap at that end. Room beyond an end disc is only that necessary
    condition, never evidence: a thoracic field of view may go on far beyond its end discs.

    Both ends anchored needs a chain as long as a whole spine; otherwise neither is kept (unsure: unanchored).

    Args:
        positions_px: (M, 2) site positions (row, column) in input pixels, head to foot.
        scores: (M, N_CHANNELS) channel scores of the sites.
        chain: (site, channel) pairs of a chain, head to foot; only its sites count here.
        inside: (h, w) input pixels inside the scan.
        pixel_mm: input pixel size in mm.
    """
    if len(chain) < 2:
        return ()
    top, bottom = chain[0][0], chain[-1][0]
    above, _ = _room_mm(inside, *positions_px[top], pixel_mm)
    _, below = _room_mm(inside, *positions_px[bottom], pixel_mm)
    top_gap = np.hypot(*(positions_px[chain[1][0]] - positions_px[top])) * pixel_mm
    bottom_gap = np.hypot(*(positions_px[bottom] - positions_px[chain[-2][0]])) * pixel_mm
    c2 = (_claims_anchor(scores[top], Anchor.C2, settings)
          and above >= settings.anchor_in_view_gaps * top_gap)
    sacrum = ((_claims_anchor(scores[bottom], Anchor.SACRUM, settings)
               or _sacrum_seen_below(positions_px, scores, bottom, bottom_gap / pixel_mm, settings))
              and below >= settings.anchor_in_view_gaps * bottom_gap)
    if c2 and sacrum:
        # Both ends anchored means the whole spine from C2/C3 to L5/S1 is in view; a shorter chain cannot
        # hold both, and with no way to tell which is right, neither is kept.
        span = np.hypot(*(positions_px[bottom] - positions_px[top])) * pixel_mm
        whole = min(settings.scales) * expected_spacing_mm(ANCHOR_END_NUMBERS[Anchor.C2][-1], 25)
        if span < WHOLE_SPINE_SHARE * whole:
            c2 = sacrum = False
    return tuple(anchor for anchor, found in ((Anchor.C2, c2), (Anchor.SACRUM, sacrum)) if found)


@dataclass(frozen=True)
class Decoded:
    """Labelled discs head to foot and the anchors their names were counted from (none: the network's names)."""

    discs: list[DiscRecord] = field(default_factory=list)
    anchors: tuple[Anchor, ...] = ()
    below_sacrum: list[tuple[float, float, float]] = field(default_factory=list)  # RAS of disc-like sites below L5/S1

    @property
    def anchored(self) -> bool:
        return bool(self.anchors)

    @property
    def anchor(self) -> str | None:
        """"C2", "sacrum", "C2 and sacrum", or None."""
        return " and ".join(anchor.value for anchor in self.anchors) or None


def decode_chain(heatmaps: np.ndarray, slab_to_ras: np.ndarray, pixel_mm: float, stride: int = 4,
                 settings: DecodeSettings = DecodeSettings(), inside: np.ndarray | None = None) -> Decoded:
    """Labelled discs (RAS mm) from one image's heatmaps, named from an anchor where one is in view.

    Args:
        heatmaps: (N_CHANNELS, h, w) network output (last stack).
        slab_to_ras: 3x3 map from (row, column, 1) of the input image to RAS mm.
        pixel_mm: input pixel size in mm.
        stride: input pixels per heatmap pixel.
        inside: (h * stride, w * stride) input pixels inside the scan; all of them when None.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    candidates = find_candidates(heatmaps, stride, pixel_mm, settings)
    if not candidates:
        return Decoded()
    if inside is None:
        inside = np.ones((heatmaps.shape[1] * stride, heatmaps.shape[2] * stride), dtype=bool)
    candidates.sort(key=lambda candidate: candidate.position[0])  # head (row 0) to foot
    positions_px = np.array([candidate.position for candidate in candidates])
    positions = positions_px * pixel_mm
    scores = np.stack([candidate.scores for candidate in candidates])
    chain = label_chain(positions, scores, settings)  # the network's names
    counting = counting_scores(scores, settings.identity_weight)
    discs = label_chain(positions, counting, settings)  # the sites that form a chain, whatever their names
    inside = np.asarray(inside, dtype=bool)
    trimmed, sacral = split_sacral_site(discs, scores)
    anchors = find_anchors(positions_px, scores, discs, inside, pixel_mm, settings)
    if sacral:
        trimmed_anchors = find_anchors(positions_px, scores, trimmed, inside, pixel_mm, settings)
        if Anchor.SACRUM in trimmed_anchors:
            discs, anchors = trimmed, trimmed_anchors
        else:
            sacral = []
    if anchors:
        counted = label_chain(
            positions, counting, settings,
            start=(discs[0][0], _c2_end_numbers(scores[discs[0][0]], settings)) if Anchor.C2 in anchors else None,
            end=(discs[-1][0], ANCHOR_END_NUMBERS[Anchor.SACRUM]) if Anchor.SACRUM in anchors else None,
        )
        if counted:
            chain = counted
        else:
            anchors = ()
    if Anchor.C2 not in anchors:
        chain = extended_upward(chain, positions, scores, settings)
    below = []
    if Anchor.SACRUM in anchors:
        chosen = {site for site, _ in chain}
        below = sorted(set(sacral) | {site for site in sites_below_sacrum_disc(positions, scores, chain, settings)
                                      if site not in chosen})
    factor = 1.0 if anchors else settings.unanchored_confidence
    records = []
    for site, channel in chain:
        row, col = candidates[site].position
        ras = np.array([row, col, 1.0]) @ np.asarray(slab_to_ras).T
        confidence = factor * float(np.clip(scores[site].max() if anchors else scores[site, channel], 0.0, 1.0))
        records.append(DiscRecord(DISC_NUMBERS[channel], tuple(float(x) for x in ras), confidence))
    below_ras = [tuple(float(x) for x in np.array([*candidates[site].position, 1.0]) @ np.asarray(slab_to_ras).T)
                 for site in below]
    return Decoded(records, anchors, below_ras)


def decode_heatmaps(heatmaps: np.ndarray, slab_to_ras: np.ndarray, pixel_mm: float, stride: int = 4,
                    settings: DecodeSettings = DecodeSettings(), inside: np.ndarray | None = None) -> list[DiscRecord]:
    """The discs of :func:`decode_chain`, without the anchors."""
    return decode_chain(heatmaps, slab_to_ras, pixel_mm, stride, settings, inside).discs
