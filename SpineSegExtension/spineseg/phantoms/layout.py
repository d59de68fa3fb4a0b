"""The shared skeleton of CT and MRI phantoms: where each vertebra and disc sits.

A spine layout is a curved centre line through the vertebral bodies (cervical
lordosis, thoracic kyphosis, lumbar lordosis, optional mild scoliosis) with one
local frame per vertebra and per disc, and level-dependent sizes jittered
around the typical adult ones of :mod:`spineseg.anatomy`. The CT and MRI
phantom generators rasterise the same layout with their own contrasts, so both
modalities agree on anatomy and labels.

Coordinates are RAS millimetres (+x right, +y anterior, +z superior) in the
phantom's body frame; the generators place the scan grid around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy.interpolate import CubicSpline

from ..anatomy import DIMENSIONS, SACRUM, STANDARD_LEVELS, LevelSize, check_consecutive, level_size

__all__ = ["PlacedVertebra", "PlacedDisc", "SpineLayout", "make_spine_layout"]


@dataclass(frozen=True)
class PlacedVertebra:
    """A vertebra's level, size, body centre (RAS mm) and local frame.

    ``frame`` columns: lateral (towards the patient's right), anterior, and
    axial (towards the head), all unit vectors in RAS.
    """

    level: int
    size: LevelSize
    centre: np.ndarray
    frame: np.ndarray

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """RAS points (..., 3) to this vertebra's (lateral, anterior, axial) coordinates."""
        return (points - self.centre) @ self.frame


@dataclass(frozen=True)
class PlacedDisc:
    """A disc's Spinal Cord Toolbox number, centre (RAS mm), frame and size."""

    number: int
    centre: np.ndarray
    frame: np.ndarray
    height: float
    width: float
    depth: float

    def to_local(self, points: np.ndarray) -> np.ndarray:
        return (points - self.centre) @ self.frame


@dataclass(frozen=True)
class SpineLayout:
    """All vertebrae and discs of a phantom, head to foot."""

    vertebrae: list[PlacedVertebra]
    discs: list[PlacedDisc]
    centre_line: np.ndarray  # (N, 3) RAS points through the body centres, head to foot

    def bounds(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """RAS box around all vertebrae, with processes, plus ``margin`` mm."""
        points = []
        for vertebra in self.vertebrae:
            reach = 0.5 * max(vertebra.size.transverse_span, vertebra.size.body_depth) + 45.0
            points.append(vertebra.centre - reach)
            points.append(vertebra.centre + reach)
        stacked = np.array(points)
        return stacked.min(axis=0) - margin, stacked.max(axis=0) + margin


def _frame_from_tangent(axial: np.ndarray) -> np.ndarray:
    axial = axial / np.linalg.norm(axial)
    anterior = np.array([0.0, 1.0, 0.0]) - axial[1] * axial
    anterior /= np.linalg.norm(anterior)
    lateral = np.cross(anterior, axial)
    return np.stack([lateral, anterior, axial], axis=1)


def make_spine_layout(
    levels: list[int],
    rng: np.random.Generator,
    curvature: float = 1.0,
    scoliosis_mm: float = 0.0,
    size_jitter: float = 0.04,
    sacral_slope_deg: float | None = None,
    disc_height_factors: Mapping[int, float] | None = None,
) -> SpineLayout:
    """Place consecutive vertebrae along a curved spine.

    Args:
        levels: consecutive VerSe numbers in head-to-foot order, from
            ``STANDARD_LEVELS`` (for example ``[8, 9, ..., 24, 26]``).
        rng: random generator; the same seed gives the same spine.
        curvature: scale of the sagittal curves (0 = straight spine).
        scoliosis_mm: amplitude of a lateral S-curve.
        size_jitter: relative random variation of each size (per subject and per level).
        sacral_slope_deg: the S1 top plate's angle from horizontal; None draws it (40 +- 6 degrees). The
            draw is made either way, so the rest of the spine is the same.
        disc_height_factors: disc number (2 = C1/C2 ... 25 = L5/S1) -> factor on its height: a narrowed,
            degenerate disc; the vertebrae below it move up with it.
    """
    check_consecutive(levels)

    subject_scale = 1.0 + size_jitter * rng.standard_normal()
    sizes: dict[int, LevelSize] = {}
    for level in STANDARD_LEVELS:
        base = level_size(level)
        jitter = subject_scale * (1.0 + 0.5 * size_jitter * rng.standard_normal(10))
        numbers = [getattr(base, name) * factor for name, factor in zip(DIMENSIONS, jitter)]
        sizes[level] = LevelSize(*numbers, has_ribs=base.has_ribs)
    for number, factor in (disc_height_factors or {}).items():
        upper = number - 1  # disc n lies below VerSe level n - 1 (25 = L5/S1 below L5, 24)
        sizes[upper] = replace(sizes[upper], disc_below=sizes[upper].disc_below * factor)

    # Arc length of every standard level's body centre, top of C1 at s = 0.
    arc = {}
    s = 0.0
    for level in STANDARD_LEVELS:
        arc[level] = s + sizes[level].body_height / 2
        s += sizes[level].body_height + sizes[level].disc_below

    # Sagittal profile: anterior offset (mm) at key levels, randomised per subject.
    key = [1, 5, 8, 14, 19, 22, 24, SACRUM]
    offsets = np.array([0.0, 10.0, 2.0, -22.0, -4.0, 14.0, 8.0, -22.0])
    offsets = curvature * offsets * (1.0 + 0.25 * rng.standard_normal(len(offsets)))
    sagittal = CubicSpline([arc[level] for level in key], offsets, bc_type="natural")
    phase, wavelength = rng.uniform(0, 2 * np.pi), rng.uniform(250.0, 450.0)

    def centre_at(arc_length: np.ndarray) -> np.ndarray:
        arc_length = np.asarray(arc_length, dtype=float)
        x = scoliosis_mm * np.sin(2 * np.pi * arc_length / wavelength + phase)
        return np.stack([x, sagittal(arc_length), -arc_length], axis=-1)

    def tangent_at(arc_length: float) -> np.ndarray:
        step = 0.5
        return centre_at(arc_length - step) - centre_at(arc_length + step)

    vertebrae = []
    for level in levels:
        frame = _frame_from_tangent(tangent_at(arc[level]))
        if level == SACRUM:
            # Sacral slope: the S1 top plate faces anterior-superior, about 40 degrees from horizontal.
            slope = np.deg2rad(40.0 + 6.0 * rng.standard_normal())
            if sacral_slope_deg is not None:
                slope = np.deg2rad(sacral_slope_deg)
            frame = _frame_from_tangent(np.array([0.0, np.sin(slope), np.cos(slope)]))
        vertebrae.append(PlacedVertebra(level, sizes[level], centre_at(arc[level]), frame))

    discs = []
    for upper, lower in zip(levels[:-1], levels[1:]):
        s_disc = arc[upper] + sizes[upper].body_height / 2 + sizes[upper].disc_below / 2
        number = 25 if lower == SACRUM else lower
        width = 0.5 * (sizes[upper].body_width + sizes[lower].body_width)
        depth = 0.5 * (sizes[upper].body_depth + sizes[lower].body_depth)
        discs.append(
            PlacedDisc(number, centre_at(s_disc), _frame_from_tangent(tangent_at(s_disc)),
                       sizes[upper].disc_below, width, depth)
        )

    first, last = arc[levels[0]] - 40.0, arc[levels[-1]] + 40.0
    centre_line = centre_at(np.linspace(first, last, max(int(last - first), 2)))
    return SpineLayout(vertebrae, discs, centre_line)
