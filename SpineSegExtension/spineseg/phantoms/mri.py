"""Seeded MRI-like spine phantoms (T1w and T2w) with exact disc centre points.

The anatomy comes from :func:`spineseg.phantoms.layout.make_spine_layout`, the
same skeleton the CT phantom rasterises, so both modalities agree on levels.
Each structure is an analytic shape in its vertebra's or disc's local frame,
evaluated at the voxel centres of the scan grid through the Volume affine, so
any spacing and any orientation of the grid gives the same anatomy in RAS.

Contrast (relative signal, before bias field and noise):

============  ======  ======
tissue         T1w     T2w
============  ======  ======
marrow         bright  medium
disc nucleus   dark    bright
disc annulus   dark    darker
CSF            dark    bright
cord           medium  medium
fat            bright  bright-ish
muscle         dark    dark
cortex, air    black   black
============  ======  ======

Disc points carry Spinal Cord Toolbox numbers (2 = C1/C2 ... 25 = L5/S1).

Beside the image, every phantom carries its map of generation classes
(:class:`MRITissue`, the tissue painted last over more than half a voxel), from
which :mod:`.mri_appearance` draws the same anatomy with any contrast.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import numpy as np
from scipy import ndimage

from ..anatomy import SACRUM, STANDARD_LEVELS
from ..volume import Volume, affine_from_geometry
from .layout import PlacedDisc, PlacedVertebra, SpineLayout, make_spine_layout
from .real_shapes import REAL_SHAPE_PROBABILITY, RealShapeLibrary, real_stand_ins

__all__ = ["MRIPhantom", "MRITissue", "make_mri_phantom", "random_mri_phantom", "FIELDS_OF_VIEW", "CONTRASTS",
           "axes_from_code"]

log = logging.getLogger(__name__)

CONTRASTS = ("T1", "T2")

# Named fields of view: consecutive VerSe levels, head to foot.
FIELDS_OF_VIEW: dict[str, list[int]] = {
    "cervical": list(range(1, 10)),            # C1..T2
    "cervicothoracic": list(range(1, 14)),     # C1..T6
    "thoracic": list(range(7, 21)),            # C7..L1
    "thoracolumbar": list(range(14, 25)) + [SACRUM],  # T7..S
    "lumbar": list(range(17, 25)) + [SACRUM],  # T10..S
}

# Relative signal of each tissue per contrast.
_TISSUE = {
    "T1": dict(marrow=0.72, nucleus=0.32, annulus=0.26, csf=0.12, cord=0.48, fat=0.95, muscle=0.30,
               posterior=0.55, cortex=0.06, organ=0.40, lung=0.04, ligament=0.05),
    "T2": dict(marrow=0.42, nucleus=0.92, annulus=0.30, csf=1.00, cord=0.40, fat=0.70, muscle=0.22,
               posterior=0.35, cortex=0.05, organ=0.45, lung=0.04, ligament=0.05),
}


class MRITissue(enum.IntEnum):
    """Generation classes of the MRI phantom: finer than anything a network learns, so each can get its own signal."""

    BACKGROUND = 0  # air around the body
    FAT = 1
    MUSCLE = 2
    FAT_PAD = 3  # posterior fat line between the back muscles
    AIRWAY = 4
    LUNG = 5
    ORGAN = 6
    POSTERIOR_ELEMENTS = 7  # laminae and spinous processes
    CORTEX = 8
    MARROW = 9
    CSF = 10
    CORD = 11
    ANNULUS = 12
    NUCLEUS = 13
    DEGENERATE_NUCLEUS = 14  # dehydrated nucleus: annulus-like signal, thinner
    BRAIN = 15
    SKULL = 16  # calvarium and skull base cortex
    CLIVUS = 17  # marrow of the skull base in front of the brainstem


# Extra height (mm) of the discs drawn under real vertebrae, to fill their concave endplates.
REAL_ENDPLATE_FILL_MM = 10.0

# Relative signal of the head's tissues (drawn only when asked; fixed, so the phantom's random stream is unchanged).
_HEAD_SIGNAL = {"T1": dict(brain=0.45, skull=0.06, clivus=0.65), "T2": dict(brain=0.55, skull=0.05, clivus=0.40)}


@dataclass(frozen=True)
class MRIPhantom:
    """A generated MRI with its disc centres.

    Attributes:
        image: float32 intensities, roughly 0..1 before the bias field.
        disc_points: disc number -> RAS centre in mm, for the discs inside the grid.
        layout: the spine layout the image was drawn from.
        contrast: "T1" or "T2".
        classes: uint8 :class:`MRITissue` per voxel of ``image`` (its generation classes).
    """

    image: Volume
    disc_points: dict[int, np.ndarray]
    layout: SpineLayout
    contrast: str = "T2"
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.uint8))


def axes_from_code(code: str) -> np.ndarray:
    """3x3 direction matrix (columns = RAS unit vectors of i, j, k) for a code like 'PIR'."""
    unit = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
    code = str(code).upper()
    if len(code) != 3 or any(letter not in unit for letter in code):
        raise ValueError(f"orientation must be three letters from RLAPSI, got {code!r}")
    if len({unit[letter][0] for letter in code}) != 3:
        raise ValueError(f"orientation {code!r} names the same axis twice")
    direction = np.zeros((3, 3))
    for column, letter in enumerate(code):
        axis, sign = unit[letter]
        direction[axis, column] = sign
    return direction


def _rotation(degrees: float | tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix about the R, A and S axes (degrees, applied in that order)."""
    angles = np.deg2rad(np.broadcast_to(np.asarray(degrees, dtype=float), (3,)))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _soft_inside(signed: np.ndarray, width: float = 0.6) -> np.ndarray:
    """Smooth 0..1 occupancy from a signed distance-like value (negative inside), width in mm."""
    return 1.0 / (1.0 + np.exp(np.clip(signed / width, -30, 30)))


def _ellipse_distance(a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipse with radii ra, rb (negative inside)."""
    radius = np.sqrt((a / ra) ** 2 + (b / rb) ** 2)
    return (radius - 1.0) * min(ra, rb)


class _Canvas:
    """Voxel-centre RAS coordinates of a grid, and a paint operation per sub-block."""

    def __init__(self, shape: tuple[int, int, int], affine: np.ndarray) -> None:
        self.shape = shape
        self.affine = affine
        self.image = np.zeros(shape, dtype=np.float32)
        self.classes = np.zeros(shape, dtype=np.uint8)
        self.inverse = np.linalg.inv(affine)

    def block(self, lower: np.ndarray, upper: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """Index box enclosing the RAS box [lower, upper] and the RAS points of its voxels."""
        corners = np.array([[x, y, z] for x in (lower[0], upper[0]) for y in (lower[1], upper[1])
                            for z in (lower[2], upper[2])])
        ijk = corners @ self.inverse[:3, :3].T + self.inverse[:3, 3]
        start = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        stop = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, self.shape)
        if np.any(stop <= start):
            return None
        grids = np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(start, stop)], indexing="ij")
        ijk_points = np.stack(grids, axis=-1)
        ras = ijk_points @ self.affine[:3, :3].T.astype(np.float32) + self.affine[:3, 3].astype(np.float32)
        return tuple(slice(a, b) for a, b in zip(start, stop)), ras

    def paint(self, where: tuple[slice, ...], occupancy: np.ndarray, value: float, kind: MRITissue) -> None:
        """Blend ``value`` into the image with the given 0..1 occupancy (later shapes cover earlier ones);
        ``kind`` takes the voxels it covers by more than half."""
        region = self.image[where]
        region += occupancy.astype(np.float32) * (np.float32(value) - region)
        self.classes[where][occupancy > 0.5] = kind


def _local_block(canvas: _Canvas, part, reach: float
                 ) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray] | None:
    """The canvas block within ``reach`` mm of a vertebra's or disc's centre, and its voxels' lateral, anterior
    and axial coordinates (mm) in the part's own frame; None when the block is outside the canvas."""
    found = canvas.block(part.centre - reach, part.centre + reach)
    if found is None:
        return None
    where, ras = found
    local = (ras - part.centre.astype(np.float32)) @ part.frame.astype(np.float32)
    return where, local[..., 0], local[..., 1], local[..., 2]


def _draw_body(canvas: _Canvas, layout: SpineLayout, tissue: dict[str, float], rng: np.random.Generator) -> None:
    """Neck or trunk around the spine: fat layer, muscle, an anterior organ or airway region."""
    line = layout.centre_line
    lower, upper = layout.bounds(margin=10.0)
    lower[2], upper[2] = line[:, 2].min() - 60.0, line[:, 2].max() + 60.0
    found = canvas.block(lower, upper)
    if found is None:
        return
    where, ras = found
    # Body outline follows the centre line: for each voxel, the spine point at the same height.
    order = np.argsort(line[:, 2])
    z = ras[..., 2]
    cx = np.interp(z, line[order, 2], line[order, 0])
    cy = np.interp(z, line[order, 2], line[order, 1])
    # Arc length from the top of C1 (the layout puts C1 at z = 0 going down).
    arc = -z
    height_from_top = np.clip((arc + 20.0) / 140.0, 0.0, 1.0)
    half_width = 60.0 + 90.0 * height_from_top
    half_depth = 50.0 + 55.0 * height_from_top
    centre_y = cy + 10.0 + 25.0 * height_from_top  # body centre lies anterior to the spine
    outline = np.sqrt(((ras[..., 0] - cx) / half_width) ** 2 + ((ras[..., 1] - centre_y) / half_depth) ** 2)
    signed = (outline - 1.0) * half_depth
    canvas.paint(where, _soft_inside(signed, 1.0), tissue["fat"], MRITissue.FAT)
    canvas.paint(where, _soft_inside(signed + 8.0, 1.0), tissue["muscle"], MRITissue.MUSCLE)
    # In front of the spine: airway in the neck, lungs in the chest, organs in the abdomen.
    lateral = ras[..., 0] - cx
    front = ras[..., 1] - cy
    airway = np.maximum(_ellipse_distance(lateral, front - 38.0, 8.0, 7.0), arc - 150.0)
    canvas.paint(where, _soft_inside(airway, 1.0), tissue["lung"], MRITissue.AIRWAY)
    chest = _soft_inside(160.0 - arc, 8.0) * _soft_inside(arc - 430.0 - 20.0 * (front / 60.0), 8.0)
    inner = np.sqrt((lateral / (0.8 * half_width)) ** 2 + ((front - 25.0 - 50 * height_from_top) / (0.6 * half_depth)) ** 2)
    in_trunk = _soft_inside((inner - 1.0) * 30.0, 3.0) * (front > 12.0)
    canvas.paint(where, in_trunk * chest, tissue["lung"], MRITissue.LUNG)
    canvas.paint(where, in_trunk * _soft_inside(450.0 - arc, 8.0), tissue["organ"], MRITissue.ORGAN)
    # Posterior neck and back muscles stay; a thin fat line marks the posterior fat pad.
    behind = ras[..., 1] - cy
    canvas.paint(where, _soft_inside(np.abs(behind + 55.0) - 2.0, 1.0) * _soft_inside(np.abs(ras[..., 0] - cx) - 15.0),
                 0.5 * (tissue["fat"] + tissue["muscle"]), MRITissue.FAT_PAD)


def _draw_analytic_bone(canvas: _Canvas, where: tuple[slice, ...], vertebra, tissue: dict[str, float],
                        lat: np.ndarray, ant: np.ndarray, ax: np.ndarray, half_h: float, canal_y: float) -> None:
    """The analytic vertebra: lamina and spinous process, then the body (marrow inside a thin cortex)."""
    size = vertebra.size
    body_depth = size.body_depth
    # Posterior elements first (bodies and canal cover them where they meet).
    ring = _ellipse_distance(lat, ant - canal_y, size.canal_width / 2 + 5.0, size.canal_depth / 2 + 5.0)
    lamina = _soft_inside(np.maximum(ring, np.abs(ax) - 0.75 * half_h)) * (ant < canal_y + 2.0)
    canvas.paint(where, lamina, tissue["posterior"], MRITissue.POSTERIOR_ELEMENTS)
    if vertebra.level != SACRUM:
        spine_tip_y = canal_y - size.canal_depth / 2 - 4.0 - size.spinous_length
        # Spinous process: a slab sloping down towards its tip.
        t = np.clip((canal_y - size.canal_depth / 2 - ant) / max(size.spinous_length, 1.0), 0.0, 1.0)
        ax_centre = -size.spinous_drop * t
        spinous = np.maximum.reduce([
            np.abs(lat) - 3.5,
            np.abs(ax - ax_centre) - 0.35 * half_h - 1.0,
            ant - (canal_y - size.canal_depth / 2 + 1.0),
            spine_tip_y - ant,
        ])
        canvas.paint(where, _soft_inside(spinous), tissue["posterior"], MRITissue.POSTERIOR_ELEMENTS)
    # Body: marrow inside a thin cortex.
    body = np.maximum(_ellipse_distance(lat, ant, size.body_width / 2, body_depth / 2), np.abs(ax) - half_h)
    canvas.paint(where, _soft_inside(body), tissue["cortex"], MRITissue.CORTEX)
    canvas.paint(where, _soft_inside(body + 1.2), tissue["marrow"], MRITissue.MARROW)


def _draw_vertebra(canvas: _Canvas, vertebra, tissue: dict[str, float], disc_above: float, disc_below: float,
                   real_sd: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None) -> None:
    """Body (marrow with dark cortex), canal with CSF and cord, lamina and spinous process.

    ``real_sd`` (local lateral, anterior, axial mm -> signed distance mm) paints a real vertebra instead of the
    analytic body and posterior elements: bone behind the body's back gets the posterior elements' signal.
    """
    size = vertebra.size
    found = _local_block(canvas, vertebra, size.body_depth / 2 + size.canal_depth + size.spinous_length + 12.0)
    if found is None:
        return
    where, lat, ant, ax = found
    along = np.abs(ax)
    half_h = size.body_height / 2
    body_depth = size.body_depth
    if vertebra.level == SACRUM:
        half_h = 24.0
        ax = ax + 18.0  # the sacrum extends well below its top plate
    canal_y = -(body_depth / 2 + size.canal_depth / 2 + 0.5)
    seg_half = half_h + 0.5 * (disc_above + disc_below) / 2 + 0.6
    if real_sd is not None:
        signed = real_sd(lat, ant, ax)
        behind = ant < -body_depth / 2
        canvas.paint(where, _soft_inside(signed) * behind, tissue["posterior"], MRITissue.POSTERIOR_ELEMENTS)
        canvas.paint(where, _soft_inside(signed) * ~behind, tissue["cortex"], MRITissue.CORTEX)
        canvas.paint(where, _soft_inside(signed + 1.2) * ~behind, tissue["marrow"], MRITissue.MARROW)
    else:
        _draw_analytic_bone(canvas, where, vertebra, tissue, lat, ant, ax, half_h, canal_y)
    # Dark ligament line just behind the body, then CSF and cord in the canal.
    along = along - seg_half
    canal = np.maximum(_ellipse_distance(lat, ant - canal_y, size.canal_width / 2, size.canal_depth / 2), along)
    canvas.paint(where, _soft_inside(canal), tissue["csf"], MRITissue.CSF)
    cord_r = (5.5, 4.0) if vertebra.level <= 8 else (4.5, 3.5)
    if vertebra.level <= 21:  # the cord ends near L1/L2
        cord = np.maximum(_ellipse_distance(lat, ant - canal_y, *cord_r), along)
        canvas.paint(where, _soft_inside(cord), tissue["cord"], MRITissue.CORD)


def _draw_disc(canvas: _Canvas, disc, tissue: dict[str, float], degenerate: bool = False,
               nucleus: bool = True) -> None:
    """Disc: bright (T2) nucleus inside a darker annulus, flat cylinder in the disc's frame.

    A degenerate disc has a smaller, dehydrated nucleus with almost the annulus's signal; ``nucleus=False``
    draws the annulus alone."""
    found = _local_block(canvas, disc, max(disc.width, disc.depth) / 2 + disc.height + 4.0)
    if found is None:
        return
    where, lat, ant, ax = found
    # Slight bulge: thicker in the middle, thinner at the rim.
    radius = np.sqrt((lat / (disc.width / 2)) ** 2 + (ant / (disc.depth / 2)) ** 2)
    half_h = disc.height / 2 * (1.05 - 0.25 * np.clip(radius, 0, 1) ** 2)
    annulus = np.maximum((radius - 1.0) * disc.depth / 2, np.abs(ax) - half_h)
    canvas.paint(where, _soft_inside(annulus, 0.5), tissue["annulus"], MRITissue.ANNULUS)
    if not nucleus:
        return
    if degenerate:
        nucleus = np.maximum((radius - 0.45) * disc.depth / 2, np.abs(ax) - 0.45 * half_h)
        canvas.paint(where, _soft_inside(nucleus, 0.8), 1.15 * tissue["annulus"], MRITissue.DEGENERATE_NUCLEUS)
        return
    nucleus = np.maximum((radius - 0.62) * disc.depth / 2, np.abs(ax) - 0.7 * half_h)
    canvas.paint(where, _soft_inside(nucleus, 0.8), tissue["nucleus"], MRITissue.NUCLEUS)


# Heights (mm) of S1..S4 along the sacrum's axis. The drawn sacral block ends at S2's bottom, 48 mm below its top
# plate (see _draw_vertebra); S3 and S4 are drawn beyond it when the lower sacrum is asked for.
SACRAL_SEGMENT_HEIGHTS_MM = (28.0, 20.0, 16.0, 13.0)
SACRUM_TOP_PLATE_MM = 6.0  # the sacrum's top plate in its own axial coordinate (see _draw_vertebra)


@dataclass(frozen=True)
class LowerSacrum:
    """The sacrum below S1 as young and varied sacra show it (phantom variety).

    Attributes:
        remnant_heights_mm: heights of the S1/S2, S2/S3 and S3/S4 remnant discs (0: fused without a line). They
            are not among ``disc_points``: a reader must not count them.
        remnant_scale: their width and depth as a share of the S1 body's.
        remnant_nucleus: whether they keep a small hydrated nucleus (bright in T2) or are dark lines.
        bend_deg: how much each of S3 and S4 bends forward from the segment above (the sacrum's concave front).
    """

    remnant_heights_mm: tuple[float, ...] = (0.0, 0.0, 0.0)
    remnant_scale: float = 1.0
    remnant_nucleus: bool = True
    bend_deg: float = 15.0


def _bent_forward(frame: np.ndarray, degrees: float) -> np.ndarray:
    """``frame`` turned about its lateral axis so that its downward axis leans towards its front."""
    angle = np.deg2rad(degrees)
    lateral, anterior, axial = frame.T
    return np.stack([lateral, np.cos(angle) * anterior + np.sin(angle) * axial,
                     np.cos(angle) * axial - np.sin(angle) * anterior], axis=1)


def _seated_sacrum(layout: SpineLayout) -> SpineLayout:
    """``layout`` with the sacrum moved so that its top plate meets the L5/S1 disc's lower face, and that disc
    turned halfway to the sacrum's tilt (the wedge real L5/S1 discs are); the basic phantom leaves a gap of about
    10 mm under L5/S1, which a steep or narrowed L5/S1 would widen."""
    sacrum, disc = layout.vertebrae[-1], layout.discs[-1]
    axial = disc.frame[:, 2] + sacrum.frame[:, 2]
    disc = replace(disc, frame=_frame_like(disc.frame, axial / np.linalg.norm(axial)))
    top_plate = disc.centre - disc.frame[:, 2] * disc.height / 2
    sacrum = replace(sacrum, centre=top_plate - sacrum.frame[:, 2] * SACRUM_TOP_PLATE_MM)
    return replace(layout, vertebrae=[*layout.vertebrae[:-1], sacrum], discs=[*layout.discs[:-1], disc])


def _frame_like(frame: np.ndarray, axial: np.ndarray) -> np.ndarray:
    """A frame with the given axial column, its lateral column that of ``frame`` made orthogonal to it."""
    lateral = frame[:, 0] - axial * (frame[:, 0] @ axial)
    lateral /= np.linalg.norm(lateral)
    return np.stack([lateral, np.cross(axial, lateral), axial], axis=1)


def _sacral_junctions(layout: SpineLayout, lower: LowerSacrum) -> tuple[list[PlacedVertebra], list[PlacedDisc]]:
    """The S3 and S4 segments below the drawn block and the S1/S2, S2/S3 and S3/S4 junctions, in the sacrum's
    frame bent forward segment by segment; each junction's size is that of an L5/S1-like disc times the scale."""
    sacrum, above = layout.vertebrae[-1], layout.discs[-1]
    frame = sacrum.frame
    point = sacrum.centre + frame[:, 2] * SACRUM_TOP_PLATE_MM
    segments, junctions = [], []
    size = sacrum.size
    for index, height in enumerate(SACRAL_SEGMENT_HEIGHTS_MM):
        if index >= 2:  # S3 and S4: bone beyond the drawn block, narrower and bent forward (2 mm taller, so
            # that the bend leaves no gap behind)
            frame = _bent_forward(frame, lower.bend_deg)
            size = replace(size, body_width=0.85 * size.body_width, body_depth=0.85 * size.body_depth,
                           body_height=height + 2.0)
            segments.append(PlacedVertebra(SACRUM, size, point - frame[:, 2] * height / 2, frame))
        point = point - frame[:, 2] * height
        if index < len(lower.remnant_heights_mm):
            junctions.append(replace(above, number=SACRUM, centre=point, frame=frame,
                                     height=lower.remnant_heights_mm[index],
                                     width=lower.remnant_scale * above.width, depth=lower.remnant_scale * above.depth))
    return segments, junctions


def _draw_sacral_segment(canvas: _Canvas, segment: PlacedVertebra, tissue: dict[str, float]) -> None:
    """A lower sacral segment: marrow inside a thin cortex, no arch."""
    found = _local_block(canvas, segment, max(segment.size.body_width, segment.size.body_depth) / 2 + 6.0)
    if found is None:
        return
    where, lat, ant, ax = found
    body = np.maximum(_ellipse_distance(lat, ant, segment.size.body_width / 2, segment.size.body_depth / 2),
                      np.abs(ax) - segment.size.body_height / 2)
    canvas.paint(where, _soft_inside(body), tissue["cortex"], MRITissue.CORTEX)
    canvas.paint(where, _soft_inside(body + 1.2), tissue["marrow"], MRITissue.MARROW)


def _draw_bladder(canvas: _Canvas, layout: SpineLayout, tissue: dict[str, float], radii_mm: np.ndarray) -> None:
    """A fluid-filled bladder in front of the lower sacrum (bright in T2, as the CSF): a disc-like blob near the
    sacrum that real pelvic scans show."""
    sacrum = layout.vertebrae[-1]
    centre = sacrum.centre + np.array([0.0, sacrum.size.body_depth / 2 + 20.0 + radii_mm[1], -45.0])
    found = canvas.block(centre - radii_mm, centre + radii_mm)
    if found is None:
        return
    where, ras = found
    inside = np.sqrt((((ras - centre.astype(np.float32)) / radii_mm.astype(np.float32)) ** 2).sum(axis=-1))
    canvas.paint(where, _soft_inside((inside - 1.0) * radii_mm.min(), 1.0), tissue["csf"], MRITissue.CSF)


def _draw_head(canvas: _Canvas, layout: SpineLayout, signal: dict[str, float], tissue: dict[str, float]) -> None:
    """Skull base, brain, brainstem in its CSF and the clivus above C1 (the dens and the skull base anchor the count)."""
    atlas = next(v for v in layout.vertebrae if v.level == 1)
    top = atlas.centre.astype(np.float32)
    found = canvas.block(top + np.array([-80.0, -90.0, 0.0]), top + np.array([80.0, 110.0, 160.0]))
    if found is None:
        return
    where, ras = found
    x, y, z = (ras - top).transpose(3, 0, 1, 2)
    # Brain: an ellipsoid whose floor lies about 20 mm above the atlas; the skull is a 6 mm shell around it.
    brain = (np.sqrt((x / 65.0) ** 2 + ((y - 10.0) / 85.0) ** 2 + ((z - 85.0) / 62.0) ** 2) - 1.0) * 62.0
    canvas.paint(where, _soft_inside(brain - 7.0, 1.0), tissue["fat"], MRITissue.FAT)
    canvas.paint(where, _soft_inside(brain - 6.0, 0.8), signal["skull"], MRITissue.SKULL)
    canvas.paint(where, _soft_inside(brain, 0.8), signal["brain"], MRITissue.BRAIN)
    # Brainstem in the cisterns, running from the cord up into the brain through the foramen magnum.
    stem = np.maximum(np.hypot(x, y + 12.0) - 10.0, -z)
    canvas.paint(where, _soft_inside(np.maximum(np.hypot(x, y + 14.0) - 17.0, -z), 1.0), tissue["csf"], MRITissue.CSF)
    canvas.paint(where, _soft_inside(stem, 0.8), tissue["cord"], MRITissue.CORD)
    # Clivus: a bar of skull-base bone sloping up and forward from just above the dens.
    along = (y - 8.0) * 0.6 + (z - 12.0) * 0.8
    across = (y - 8.0) * 0.8 - (z - 12.0) * 0.6
    clivus = np.maximum.reduce([np.abs(x) - 10.0, np.abs(across) - 5.0, np.abs(along - 22.0) - 22.0])
    canvas.paint(where, _soft_inside(clivus + 1.5, 0.6), signal["skull"], MRITissue.SKULL)
    canvas.paint(where, _soft_inside(clivus, 0.6), signal["clivus"], MRITissue.CLIVUS)


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field exp(random low-frequency function), mean about 1."""
    coarse = rng.standard_normal((4, 4, 4))
    field = ndimage.zoom(coarse, [s / 4 for s in shape], order=1, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]
    field = field / (np.std(field) + 1e-6)
    return np.exp(strength * field).astype(np.float32)


def _texture(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Mild multiplicative tissue texture (scanner-independent heterogeneity)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)
    return 1.0 + 0.075 * noise / (np.std(noise) + 1e-6)


def make_mri_phantom(
    levels: list[int] | str | None = None,
    *,
    contrast: str = "T2",
    spacing: tuple[float, float, float] = (3.5, 0.9, 0.9),
    orientation: str = "RIP",
    rotation_deg: float | tuple[float, float, float] = 0.0,
    seed: int = 0,
    curvature: float = 1.0,
    scoliosis_mm: float = 0.0,
    lateral_extent_mm: float = 70.0,
    margin_mm: float = 25.0,
    noise: float = 0.03,
    bias: float = 0.2,
    tissue_jitter: float = 0.0,
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    anterior_mm: float = 85.0,
    posterior_mm: float = 75.0,
    head: bool = False,
    degenerate_discs: frozenset[int] = frozenset(),
    real_shapes: RealShapeLibrary | None = None,
    lumbarised_s1: bool = False,
    sacral_slope_deg: float | None = None,
    narrowed_discs: dict[int, float] | None = None,
    lower_sacrum: LowerSacrum | None = None,
    bladder_mm: tuple[float, float, float] | None = None,
) -> MRIPhantom:
    """Make a sagittal-style MRI of a spine segment.

    Args:
        levels: consecutive VerSe numbers (from ``STANDARD_LEVELS``) or a name of
            :data:`FIELDS_OF_VIEW`; default "lumbar".
        contrast: "T1" or "T2".
        spacing: voxel size in mm along the grid axes i, j, k (before rotation).
            With the default orientation "RIP" the first axis is left-right,
            giving the thick-slice sagittal geometry of clinical spine MRI.
        orientation: three letters naming where i, j and k point ("PIR", "LPS", ...).
        rotation_deg: extra rotation of the grid about the R, A, S axes.
        seed: the same seed gives the same image.
        curvature: scale of the sagittal curves; scoliosis_mm: lateral S-curve.
        lateral_extent_mm: left-right size of the field of view.
        margin_mm: head-to-foot margin beyond the first and last vertebra centre.
        noise: Rician noise level relative to the brightest tissue.
        bias: strength of the multiplicative bias field (0 = none).
        tissue_jitter: relative random variation of each tissue's signal.
        offset_mm: shift of the field-of-view centre from the spine (RAS mm).
        anterior_mm, posterior_mm: front-back field of view in front of and behind the vertebra centres.
        head: draw the skull base, brain and brainstem above C1 (when C1 is drawn), with the
            field of view reaching into the head by ``margin_mm``.
        degenerate_discs: disc numbers drawn degenerate (dehydrated nucleus).
        real_shapes: real vertebrae (VerSe) that stand in for T4-L5 (see
            :func:`~.real_shapes.real_stand_ins`); None draws analytic ones only.
        lumbarised_s1: transitional anatomy: a full disc between S1 and S2, which is not among ``disc_points``
            (it has no number of its own; a reader must flag it, not count it).
        sacral_slope_deg: the S1 top plate's angle from horizontal; None draws 40 +- 6 degrees.
        narrowed_discs: disc number -> factor on its height (a narrowed degenerate disc; draw it degenerate too).
        lower_sacrum: draw S3 and S4 bent forward and the sacral remnant discs (:class:`LowerSacrum`).
        bladder_mm: left-right, front-back and head-foot radii of a fluid-filled bladder in front of the sacrum.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if levels is None:
        levels = "lumbar"
    if isinstance(levels, str):
        if levels not in FIELDS_OF_VIEW:
            raise ValueError(f"levels must be a list or one of {sorted(FIELDS_OF_VIEW)}, got {levels!r}")
        levels = FIELDS_OF_VIEW[levels]
    spacing_arr = np.asarray(spacing, dtype=float)
    if spacing_arr.shape != (3,) or np.any(spacing_arr <= 0):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    rng = np.random.default_rng(seed)
    layout = make_spine_layout(list(levels), rng, curvature=curvature, scoliosis_mm=scoliosis_mm,
                               sacral_slope_deg=sacral_slope_deg, disc_height_factors=narrowed_discs)
    has_sacrum = layout.vertebrae[-1].level == SACRUM and bool(layout.discs)
    if lower_sacrum is not None and has_sacrum:
        layout = _seated_sacrum(layout)

    tissue = dict(_TISSUE[contrast])
    if tissue_jitter > 0:
        tissue = {name: max(0.02, value * (1.0 + tissue_jitter * rng.standard_normal())) for name, value in tissue.items()}

    # Field of view in RAS: spine box plus margins, then the rotated grid that covers it.
    centres = np.array([v.centre for v in layout.vertebrae])
    lower = np.array([centres[:, 0].min() - lateral_extent_mm / 2, centres[:, 1].min() - posterior_mm,
                      centres[:, 2].min() - margin_mm])
    upper = np.array([centres[:, 0].max() + lateral_extent_mm / 2, centres[:, 1].max() + anterior_mm,
                      centres[:, 2].max() + margin_mm])
    centre = (lower + upper) / 2 + np.asarray(offset_mm, dtype=float)
    extent_ras = upper - lower
    direction = _rotation(rotation_deg) @ axes_from_code(orientation)
    # Size along each grid axis: the RAS extent along the axis it mostly follows.
    base_axes = np.argmax(np.abs(axes_from_code(orientation)), axis=0)
    extent_ijk = extent_ras[base_axes]
    shape = tuple(int(max(np.ceil(e / s), 1)) for e, s in zip(extent_ijk, spacing_arr))
    origin = centre - direction @ (spacing_arr * (np.array(shape) - 1) / 2)
    affine = affine_from_geometry(spacing_arr, origin, direction)

    canvas = _Canvas(shape, affine)
    _draw_body(canvas, layout, tissue, rng)
    if bladder_mm is not None and has_sacrum:
        _draw_bladder(canvas, layout, tissue, np.asarray(bladder_mm, dtype=float))
    if head and any(v.level == 1 for v in layout.vertebrae):
        _draw_head(canvas, layout, _HEAD_SIGNAL[contrast], tissue)
    stand_ins = real_stand_ins([v.level for v in layout.vertebrae], real_shapes) if real_shapes else {}
    if stand_ins:
        # Real endplates are concave where the analytic disc is flat: taller annuli drawn first fill the hollows,
        # the vertebrae then cover what is bone, and the discs are drawn over them at their own height.
        for disc in layout.discs:
            _draw_disc(canvas, replace(disc, height=disc.height + REAL_ENDPLATE_FILL_MM), tissue, nucleus=False)
    for index, vertebra in enumerate(layout.vertebrae):
        above = layout.discs[index - 1].height if index > 0 else 4.0
        below = layout.discs[index].height if index < len(layout.discs) else 4.0
        real_level = stand_ins.get(vertebra.level)
        real_sd = None if real_level is None else partial(real_shapes.signed_distance, real_level, vertebra, rng=rng)
        _draw_vertebra(canvas, vertebra, tissue, above, below, real_sd)
    for disc in layout.discs:
        _draw_disc(canvas, disc, tissue, degenerate=disc.number in degenerate_discs)
    if lumbarised_s1 and has_sacrum:  # a full L5/S1-like disc between S1 and S2
        s1_s2 = _sacral_junctions(layout, LowerSacrum((layout.discs[-1].height,)))[1][0]
        _draw_disc(canvas, s1_s2, tissue)
    if lower_sacrum is not None and has_sacrum:
        segments, junctions = _sacral_junctions(layout, lower_sacrum)
        for segment in segments:
            _draw_sacral_segment(canvas, segment, tissue)
        for junction in junctions:
            if junction.height > 0:
                _draw_disc(canvas, junction, tissue, degenerate=not lower_sacrum.remnant_nucleus)

    image = canvas.image * _texture(shape, rng)
    if bias > 0:
        image *= _bias_field(shape, rng, bias)
    if noise > 0:
        sigma = noise * max(tissue.values())
        real = image + sigma * rng.standard_normal(shape).astype(np.float32)
        imaginary = sigma * rng.standard_normal(shape).astype(np.float32)
        image = np.sqrt(real**2 + imaginary**2)
    volume = Volume(image.astype(np.float32), affine)

    disc_points = {}
    for disc in layout.discs:
        ijk = volume.ras_to_ijk(disc.centre)[0]
        if np.all(ijk >= -0.5) and np.all(ijk <= np.array(shape) - 0.5):
            disc_points[disc.number] = disc.centre.copy()
    log.debug("MRI phantom %s %s: %d discs", contrast, volume, len(disc_points))
    return MRIPhantom(volume, disc_points, layout, contrast, canvas.classes)


def random_mri_phantom(
    rng: np.random.Generator, *, contrast: str | None = None, levels: list[int] | None = None, fast: bool = True,
    variety: bool = False, real_shapes: RealShapeLibrary | None = None, lumbosacral: bool = False,
) -> MRIPhantom:
    """A randomised phantom for training: field of view, contrast, spacing, pose, noise.

    Args:
        rng: random generator (the draw is reproducible from its state).
        contrast: force "T1" or "T2"; random when None.
        levels: force the field of view (consecutive VerSe numbers); random when None.
        fast: coarser in-plane spacing (1.0-1.3 mm) to keep generation quick.
        variety: also vary what real scans vary and the basic phantom keeps fixed: the head above C1
            (70 %), front-back fields of view from 25 to 200 mm around the spine, head-foot margins of
            10-120 mm (sizes log-uniform), and a fifth to a third of the discs degenerate. Drawn after
            everything else, so the phantoms without variety are unchanged.
        real_shapes: in ``REAL_SHAPE_PROBABILITY`` of the phantoms, real vertebrae stand in for T4-L5 (drawn
            last too: without a library the phantoms are unchanged).
        lumbosacral: also vary the lumbosacral junction as real lumbar exams do (:func:`_lumbosacral_anatomy`;
            drawn last of all, so the phantoms without it are unchanged).
    """
    contrast = contrast or str(rng.choice(CONTRASTS))
    if levels is None:
        start = int(rng.integers(0, len(STANDARD_LEVELS) - 6))
        length = int(rng.integers(7, 14))
        levels = STANDARD_LEVELS[start : min(start + length, len(STANDARD_LEVELS))]
    in_plane = rng.uniform(1.0, 1.3) if fast else rng.uniform(0.5, 1.0)
    thick = rng.uniform(2.5, 4.0)
    orientation = str(rng.choice(["RIP", "LIP", "PIR", "ASR", "RAS", "LPS", "PSR"]))
    # The thick axis is whichever grid axis points left-right.
    lr_axis = int(np.argmax(np.abs(axes_from_code(orientation))[0]))
    spacing = [in_plane] * 3
    spacing[lr_axis] = thick
    settings = dict(
        contrast=contrast,
        spacing=tuple(spacing),
        orientation=orientation,
        rotation_deg=tuple(rng.uniform(-8.0, 8.0, 3)),
        seed=int(rng.integers(0, 2**31 - 1)),
        curvature=float(rng.uniform(0.4, 1.5)),
        scoliosis_mm=float(rng.uniform(0.0, 6.0)),
        lateral_extent_mm=float(rng.uniform(50.0, 90.0)),
        margin_mm=float(rng.uniform(10.0, 35.0)),
        noise=float(rng.uniform(0.01, 0.06)),
        bias=float(rng.uniform(0.0, 0.35)),
        tissue_jitter=0.12,
        offset_mm=tuple(rng.uniform(-8.0, 8.0, 3)),
    )
    if variety:
        settings.update(_varied_anatomy(rng))
    if real_shapes is not None and rng.random() < REAL_SHAPE_PROBABILITY:
        settings["real_shapes"] = real_shapes
    if lumbosacral:
        settings.update(_lumbosacral_anatomy(rng))
        settings["degenerate_discs"] = frozenset(settings.get("degenerate_discs", frozenset())) | set(
            settings["narrowed_discs"])
    return make_mri_phantom(levels, **settings)


def _lumbosacral_anatomy(rng: np.random.Generator) -> dict:
    """The :func:`make_mri_phantom` settings of ``random_mri_phantom(lumbosacral=True)``: what puts a disc
    network's L5/S1 answer on the wrong site in real lumbar exams (docs/discs_anchors.md).

    Sacral slopes of 25-60 degrees; S3 and S4 bent forward 5-25 degrees each; S1/S2, S2/S3 and S3/S4 remnant
    discs (1-4.5 mm, each in 60, 45 and 30 % of the phantoms, as thin dark lines or with a small bright nucleus);
    L4/L5 and L5/S1 each narrowed to 30-75 % and dark in 30 %; a fluid-filled bladder in front of the sacrum in
    half of them.
    """
    remnants = tuple(float(rng.uniform(1.0, 4.5)) if rng.random() < share else 0.0 for share in (0.6, 0.45, 0.3))
    narrowed = {number: float(rng.uniform(0.3, 0.75)) for number in (24, 25) if rng.random() < 0.3}
    bladder = tuple(float(r) for r in rng.uniform((25.0, 20.0, 20.0), (50.0, 45.0, 40.0)))
    return dict(
        sacral_slope_deg=float(rng.uniform(25.0, 60.0)),
        narrowed_discs=narrowed,
        lower_sacrum=LowerSacrum(remnants, remnant_scale=float(rng.uniform(0.5, 0.95)),
                                 remnant_nucleus=bool(rng.random() < 0.5), bend_deg=float(rng.uniform(5.0, 25.0))),
        bladder_mm=bladder if rng.random() < 0.5 else None,
    )


def _varied_anatomy(rng: np.random.Generator) -> dict:
    """The :func:`make_mri_phantom` settings of ``random_mri_phantom(variety=True)``."""
    degenerate_share = rng.uniform(0.2, 1 / 3)
    discs = [number for number in range(2, 26) if rng.random() < degenerate_share]
    return dict(
        head=bool(rng.random() < 0.7),
        margin_mm=_log_uniform(rng, 10.0, 120.0),
        anterior_mm=_log_uniform(rng, 25.0, 200.0),
        posterior_mm=_log_uniform(rng, 25.0, 110.0),
        degenerate_discs=frozenset(discs),
    )


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A size drawn uniformly on a log scale: tight crops as often as wide fields of view."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))
