"""CT spine phantoms: analytic vertebrae, discs, ribs and body in Hounsfield units.

The shapes (:mod:`.ct_bones`) are defined in the RAS body frame of a
:class:`SpineLayout` and evaluated at the voxel centres of the scan grid
(:mod:`.ct_render`), so any orientation, oblique rotation or anisotropic
spacing samples the same anatomy. Bones are approximate signed distance
functions: the outer 1-1.5 mm is cortical bone, the rest cancellous. Soft
tissue's Hounsfield units are in :mod:`.ct_tissue`, its painting in :mod:`.ct_body`. Labels are exact
VerSe numbers (ribs, ilium and soft tissue are 0); the image gets partial
volume (Gaussian blur) and noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..anatomy import SACRUM, STANDARD_LEVELS, check_consecutive, level_to_position
from ..volume import Volume, VolumeKind
from .ct_render import Bone, Canvas, blend_other_bone, finish_image, grid_affine, paint_ribs, paint_vertebra
from .ct_body import paint_body, paint_canal, paint_discs, table_height
from .ct_tissue import CANCELLOUS_HU_PER_LEVEL, SACRUM_MARROW_DROP_HU, Subject, draw_subject
from .layout import SpineLayout, make_spine_layout
from .real_shapes import REAL_SHAPE_PROBABILITY, RealShapeLibrary, real_stand_ins

__all__ = ["CTPhantom", "make_ct_phantom", "random_ct_phantom", "random_compressions", "orientation_matrix",
           "DEFAULT_CT_LEVELS", "COMPRESSION_PROBABILITY"]

COMPRESSION_PROBABILITY = 0.15  # training phantoms with compressed vertebral bodies

DEFAULT_CT_LEVELS: list[int] = list(range(15, 25)) + [SACRUM]

@dataclass(frozen=True)
class CTPhantom:
    """A synthetic CT scan with its exact vertebra label map and the layout it was drawn from."""

    image: Volume  # int16 Hounsfield units, kind INTENSITY
    labels: Volume  # uint8 VerSe numbers, 0 background, kind LABEL, same grid as image
    layout: SpineLayout
    tissue: Volume  # uint8 generation classes (ct_tissue.Tissue) before blur and noise, same grid


_LETTERS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def orientation_matrix(code: str, rotation_deg: float = 0.0) -> np.ndarray:
    """3x3 direction matrix (columns = RAS unit vectors of i, j, k) of a code like 'LPS'.

    ``rotation_deg`` turns the axes about the superior axis (an oblique scan).
    """
    if not isinstance(code, str) or len(code) != 3 or any(c not in _LETTERS for c in code.upper()):
        raise ValueError(f"orientation must be a 3-letter code of R/L, A/P, S/I such as 'RAS' or 'LPS', got {code!r}")
    axes = [_LETTERS[c][0] for c in code.upper()]
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"orientation {code!r} must name each of R/L, A/P and S/I exactly once")
    direction = np.zeros((3, 3))
    for n, letter in enumerate(code.upper()):
        axis, sign = _LETTERS[letter]
        direction[axis, n] = sign
    angle = np.deg2rad(float(rotation_deg))
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    return rotation @ direction


def _render(layout: SpineLayout, subject: Subject, spacing: np.ndarray, direction: np.ndarray,
            cut: tuple[float, float] | None, noise_hu: float, blur_mm: float, margin_mm: float,
            rng: np.random.Generator, real_shapes: RealShapeLibrary | None = None,
            compressions: dict[int, tuple[float, float]] | None = None) -> CTPhantom:
    """Paint the body, discs, canal, ribs and vertebrae on a grid around the layout, then blur and add noise.

    ``compressions`` maps levels to the (anterior, posterior) height factors of a compressed body.
    """
    low, high = layout.bounds(margin_mm)
    # Reach the skin of the back (and the table) behind the spine.
    table_y = table_height(layout, subject)
    low[1] = min(low[1], table_y - 8.0 - margin_mm * 0.5)
    if cut is not None:
        high[2], low[2] = min(high[2], cut[0]), max(low[2], cut[1])
    affine, shape = grid_affine(direction, spacing, low, high)
    canvas = Canvas(affine, shape)

    paint_body(canvas, layout, subject, table_y)
    paint_discs(canvas, layout)
    for vertebra in layout.vertebrae:
        if vertebra.level != SACRUM:
            paint_canal(canvas, vertebra, vertebra.size.disc_below)
    for vertebra in layout.vertebrae:
        if vertebra.size.has_ribs:
            paint_ribs(canvas, vertebra, subject.cortex_mm)
    stand_ins = real_stand_ins([v.level for v in layout.vertebrae], real_shapes) if real_shapes else {}
    for vertebra in layout.vertebrae:
        index = level_to_position(vertebra.level) - 1
        cancellous = subject.cancellous_base - CANCELLOUS_HU_PER_LEVEL * index + subject.level_jitter[index]
        if vertebra.level == SACRUM:
            cancellous -= SACRUM_MARROW_DROP_HU
        paint_vertebra(canvas, vertebra, Bone(subject.cortical, cancellous, subject.cortex_mm), rng, real_shapes,
                       stand_ins.get(vertebra.level), (compressions or {}).get(vertebra.level))
    blend_other_bone(canvas, subject)
    image = finish_image(canvas.hu, spacing, noise_hu, blur_mm, rng)
    return CTPhantom(image=Volume(image, affine, VolumeKind.INTENSITY),
                     labels=Volume(canvas.labels, affine, VolumeKind.LABEL), layout=layout,
                     tissue=Volume(canvas.tissue, affine, VolumeKind.LABEL))


def _check_levels(levels: Sequence[int]) -> list[int]:
    levels = [int(level) for level in levels]
    check_consecutive(levels)
    return levels


def _check_spacing(spacing) -> np.ndarray:
    array = np.asarray(spacing, dtype=float).reshape(-1)
    if array.size == 1:
        array = np.repeat(array, 3)
    if array.size != 3 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"spacing must be three positive finite numbers (mm), got {spacing!r}")
    return array


def _cut_planes(layout: SpineLayout, rng: np.random.Generator) -> tuple[float, float]:
    """RAS z of the scan's top and bottom ends, each through the end vertebra."""
    first, last = layout.vertebrae[0], layout.vertebrae[-1]
    top = first.centre[2] + rng.uniform(-0.3, 0.3) * first.size.body_height
    if last.level == SACRUM:
        along = last.size.body_height / 2 - rng.uniform(35.0, 70.0)  # mm below S1's centre along its axis
        bottom = last.centre[2] + along * last.frame[2, 2]
    else:
        bottom = last.centre[2] + rng.uniform(-0.3, 0.3) * last.size.body_height
    return float(top), float(bottom)


def make_ct_phantom(
    levels: Sequence[int] | None = None,
    *,
    spacing: Sequence[float] | float = (1.0, 1.0, 1.0),
    orientation: str = "RAS",
    rotation_deg: float = 0.0,
    seed: int = 0,
    field_of_view_cut: bool = True,
    noise_hu: float = 20.0,
    blur_mm: float = 0.8,
    margin_mm: float = 20.0,
) -> CTPhantom:
    """Make a CT phantom of consecutive vertebrae (default T8..L5 + sacrum).

    Args:
        levels: consecutive VerSe numbers head to foot from ``STANDARD_LEVELS``.
        spacing: voxel size in mm along i, j, k.
        orientation: where the i, j, k axes point, e.g. 'RAS', 'LPS', 'PIR'.
        rotation_deg: oblique rotation of the grid about the superior axis.
        seed: the same seed gives the same anatomy on any grid.
        field_of_view_cut: let the scan's ends cut through the first and last vertebra.
        noise_hu: standard deviation of the Gaussian noise.
        blur_mm: Gaussian blur sigma in mm (partial volume); 0 for none.
        margin_mm: extra soft tissue around the spine's bounding box.

    Raises:
        ValueError: bad levels, spacing, orientation or image parameters (named in the message).
    """
    levels = _check_levels(DEFAULT_CT_LEVELS if levels is None else levels)
    spacing_array = _check_spacing(spacing)
    direction = orientation_matrix(orientation, rotation_deg)
    for name, value in (("noise_hu", noise_hu), ("blur_mm", blur_mm), ("margin_mm", margin_mm)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    layout_seed, subject_seed, cut_seed, pixel_seed = np.random.SeedSequence(seed).spawn(4)
    layout = make_spine_layout(levels, np.random.default_rng(layout_seed))
    subject = draw_subject(np.random.default_rng(subject_seed))
    cut = _cut_planes(layout, np.random.default_rng(cut_seed)) if field_of_view_cut else None
    return _render(layout, subject, spacing_array, direction, cut, float(noise_hu), float(blur_mm),
                   float(margin_mm), np.random.default_rng(pixel_seed))


def random_ct_phantom(rng: np.random.Generator, spacing: Sequence[float] | float = (2.0, 2.0, 2.0),
                      real_shapes: RealShapeLibrary | None = None) -> CTPhantom:
    """A random training phantom: 5-18 consecutive levels (mostly thoraco-lumbar), random shape and image quality.

    With ``real_shapes``, ``REAL_SHAPE_PROBABILITY`` of the phantoms paint T4-L5 with real vertebra shapes.
    ``COMPRESSION_PROBABILITY`` of the phantoms have one or two compressed bodies (T4-L5), flat or wedged
    (:func:`random_compressions`).
    """
    spacing_array = _check_spacing(spacing)
    count = int(rng.integers(5, 19))
    weights = np.ones(len(STANDARD_LEVELS))
    weights[10:] = 3.0  # T4 and below
    weights[:7] = 0.7  # cervical
    starts = np.arange(0, len(STANDARD_LEVELS) - count + 1)
    centre_weight = np.array([weights[s:s + count].mean() for s in starts])
    start = int(rng.choice(starts, p=centre_weight / centre_weight.sum()))
    levels = STANDARD_LEVELS[start:start + count]
    scoliosis = float(rng.uniform(0.0, 20.0)) if rng.random() < 0.3 else 0.0
    layout = make_spine_layout(levels, rng, curvature=float(rng.uniform(0.5, 1.5)), scoliosis_mm=scoliosis,
                               size_jitter=float(rng.uniform(0.02, 0.08)))
    subject = draw_subject(rng)
    cut = _cut_planes(layout, rng) if rng.random() < 0.8 else None
    noise_hu, blur_mm = float(rng.uniform(10.0, 40.0)), float(rng.uniform(0.5, 1.5))
    margin_mm = float(rng.uniform(10.0, 35.0))
    if real_shapes is not None and rng.random() >= REAL_SHAPE_PROBABILITY:
        real_shapes = None
    compressions = random_compressions(levels, rng) if rng.random() < COMPRESSION_PROBABILITY else None
    return _render(layout, subject, spacing_array, np.eye(3), cut, noise_hu, blur_mm, margin_mm, rng, real_shapes,
                   compressions)


def random_compressions(levels: Sequence[int], rng: np.random.Generator) -> dict[int, tuple[float, float]]:
    """One or two of ``levels`` (T4-L5) with compressed bodies: (anterior, posterior) height factors.

    Half are wedges (front 50-80 % of the height, back 85-100 %), half flattened alike front and back (60-85 %),
    as osteoporotic fractures are.
    """
    eligible = [level for level in levels if 11 <= level <= 24]
    if not eligible:
        return {}
    chosen = rng.choice(eligible, size=min(len(eligible), int(rng.integers(1, 3))), replace=False)
    compressions = {}
    for level in chosen:
        if rng.random() < 0.5:
            compressions[int(level)] = (float(rng.uniform(0.5, 0.8)), float(rng.uniform(0.85, 1.0)))
        else:
            flat = float(rng.uniform(0.6, 0.85))
            compressions[int(level)] = (flat, flat)
    return compressions
