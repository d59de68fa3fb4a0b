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

   where the expected distance between discs n and m adds up typical adult
   disc-to-disc distances (``anatomy.level_size``) and ``scale``
   (one per image, the best of ``DecodeSettings.scales``) absorbs the size of
   the person, so that only the pattern of the gaps, not their absolute
   size, pulls the labels. A missed disc is
   a skipped number whose gap the spacing prior accepts; a spurious peak is a
   site left out. The number of discs is never given; the cost is
   O(sites^2 * numbers^2 * scales), polynomial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..anatomy import level_size
from ..labels import DISC_NUMBERS
from ..results import DiscRecord
from .targets import N_CHANNELS, output_to_input

__all__ = ["Candidate", "find_candidates", "expected_spacing_mm", "label_chain", "decode_heatmaps", "DecodeSettings"]


@dataclass(frozen=True)
class DecodeSettings:
    """Decoder knobs (defaults chosen on validation phantoms, seeds 2000-2001, never on test scans)."""

    min_peak: float = 0.1
    threshold: float = 0.2
    merge_mm: float = 6.0
    spacing_weight: float = 1.0
    spacing_sigma: float = 0.5
    skip_penalty: float = 0.15
    max_sites: int = 60
    scales: tuple[float, ...] = (0.8, 0.846, 0.894, 0.946, 1.0, 1.057, 1.118, 1.182, 1.25)  # 0.8-1.25, geometric

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be one or more positive factors, got {self.scales!r}")


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
    peaks = []
    for channel in range(N_CHANNELS):
        heatmap = heatmaps[channel]
        maxima = (heatmap == ndimage.maximum_filter(heatmap, size=3)) & (heatmap >= settings.min_peak)
        for r, c in zip(*np.nonzero(maxima)):
            peaks.append((float(heatmap[r, c]), channel, _subpixel(heatmap, int(r), int(c))))
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


def label_chain(positions_mm: np.ndarray, scores: np.ndarray,
                settings: DecodeSettings = DecodeSettings()) -> list[tuple[int, int]]:
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
    for i in range(m):
        best[i] = unary[i]  # chain starting here
        for j in range(i):
            distance = float(np.hypot(*(positions_mm[i] - positions_mm[j])))
            if distance < 1e-6:
                continue
            pair = -settings.spacing_weight * (np.log(distance) - log_expected) ** 2 / settings.spacing_sigma**2 - skip
            pair = np.where(allowed, pair, -np.inf)  # pair[s, a, b]: j has channel a, i has channel b
            total = best[j][:, :, None] + pair  # (s, a, b)
            source = np.argmax(total, axis=1)  # (s, b)
            value = np.take_along_axis(total, source[:, None, :], axis=1)[:, 0, :] + unary[i]
            better = value > best[i]
            best[i] = np.where(better, value, best[i])
            back[i][better] = np.column_stack([np.full(better.sum(), j), source[better]])
    i, scale, c = np.unravel_index(int(np.argmax(best)), best.shape)
    if not np.isfinite(best[i, scale, c]) or best[i, scale, c] <= 0:
        return []
    chain = [(int(i), int(c))]
    while back[i, scale, c, 0] >= 0:
        i, c = int(back[i, scale, c, 0]), int(back[i, scale, c, 1])
        chain.append((i, c))
    return chain[::-1]


def decode_heatmaps(heatmaps: np.ndarray, slab_to_ras: np.ndarray, pixel_mm: float, stride: int = 4,
                    settings: DecodeSettings = DecodeSettings()) -> list[DiscRecord]:
    """Labelled discs (RAS mm) from one image's heatmaps.

    Args:
        heatmaps: (N_CHANNELS, h, w) network output (last stack).
        slab_to_ras: 3x3 map from (row, column, 1) of the input image to RAS mm.
        pixel_mm: input pixel size in mm.
        stride: input pixels per heatmap pixel.
    """
    candidates = find_candidates(np.asarray(heatmaps, dtype=np.float32), stride, pixel_mm, settings)
    if not candidates:
        return []
    candidates.sort(key=lambda candidate: candidate.position[0])  # head (row 0) to foot
    positions = np.array([candidate.position for candidate in candidates]) * pixel_mm
    scores = np.stack([candidate.scores for candidate in candidates])
    records = []
    for site, channel in label_chain(positions, scores, settings):
        row, col = candidates[site].position
        ras = np.array([row, col, 1.0]) @ np.asarray(slab_to_ras).T
        records.append(DiscRecord(DISC_NUMBERS[channel], tuple(float(x) for x in ras),
                                  float(np.clip(scores[site, channel], 0.0, 1.0))))
    return records
