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
from .layout import PlacedDisc, SpineLayout, make_spine_layout
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


# A lumbarised S1: its disc below lies this far below the sacrum's top plate along the sacrum's axis (an S1
# body's height), and is this much smaller than the L5/S1 disc above it.
S1_HEIGHT_MM = 28.0
S1_S2_DISC_SHRINK = 1.0


def _s1_s2_disc(layout: SpineLayout) -> PlacedDisc:
    """The disc of a lumbarised S1: an L5/S1-like disc S1_HEIGHT_MM below the sacrum's top plate, in its frame."""
    sacrum, above = layout.vertebrae[-1], layout.discs[-1]
    top_plate = 6.0  # the sacrum's top plate in its own axial coordinate (see _draw_vertebra)
    centre = sacrum.centre + sacrum.frame[:, 2] * (top_plate - S1_HEIGHT_MM)
    return replace(above, number=SACRUM, centre=centre, frame=sacrum.frame, height=S1_S2_DISC_SHRINK * above.height,
                   width=S1_S2_DISC_SHRINK * above.width, depth=S1_S2_DISC_SHRINK * above.depth)


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
        lumbarised_s1: transitional anatomy: a disc between S1 and S2 (:func:`_s1_s2_disc`), which is not among
            ``disc_points`` (it has no number of its own; a reader must flag it, not count it).
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
    layout = make_spine_layout(list(levels), rng, curvature=curvature, scoliosis_mm=scoliosis_mm)

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
    if lumbarised_s1 and layout.vertebrae[-1].level == SACRUM and layout.discs:
        _draw_disc(canvas, _s1_s2_disc(layout), tissue)

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
    variety: bool = False, real_shapes: RealShapeLibrary | None = None,
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
    return make_mri_phantom(levels, **settings)


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
