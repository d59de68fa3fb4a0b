"""Rendering of the CT phantom: the scan grid, partial volume, bone painting, blur and noise.

Shapes are evaluated at the voxel centres of the scan grid (any orientation,
oblique rotation or anisotropic spacing samples the same anatomy), each bone
only in its own bounding box of voxels, in float32. A bone's signed distance
becomes partial-volume fractions of cortex and marrow over one voxel's width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..anatomy import SACRUM
from .ct_bones import (
    SACRUM_LENGTH_MM, arch_geometry, arch_sd, atlas_sd, body_sd, dens_sd, ilium_sd, sacrum_sd, sd_capsule,
    vertebra_extent,
)
from .ct_tissue import (
    AIR_HU, FUSED_DISC_DROP_HU, MARROW_TEXTURE_HU, OTHER_CORTICAL_FACTOR, OTHER_MARROW_OFFSET_HU, SCANNER_HU_RANGE,
    Subject, Tissue,
)
from .layout import PlacedVertebra
from .real_shapes import RealShapeLibrary

__all__ = ["Bone", "Canvas", "grid_affine", "paint_ribs", "paint_vertebra", "blend_other_bone", "finish_image"]

_F = np.float32


def grid_affine(
    direction: np.ndarray, spacing: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the grid with these axes that covers the RAS box [low, high]."""
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    along = corners @ direction  # coordinate of each corner along each grid axis
    start, stop = along.min(axis=0), along.max(axis=0)
    shape = tuple(int(n) for n in np.floor((stop - start) / spacing + 1e-6).astype(int) + 1)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[np.newaxis, :]
    affine[:3, 3] = direction @ start
    return affine, shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Bone:
    """The intensities of one vertebra: cortical and cancellous HU and the cortex's thickness."""

    cortical_hu: float
    cancellous_hu: float
    cortex_mm: float


class Canvas:
    """The scan grid plus the HU, label and generation-class (:class:`Tissue`) arrays being painted."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, int, int]):
        self.affine = affine
        self.shape = shape
        self.hu = np.full(shape, AIR_HU, dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.tissue = np.full(shape, Tissue.AIR, dtype=np.uint8)
        self.inverse = np.linalg.inv(affine)
        self.voxel_mm = float(np.prod(np.linalg.norm(affine[:3, :3], axis=0)) ** (1.0 / 3.0))
        # Bone that carries no vertebra label (ribs, ilium): bone and marrow fractions, 0-255.
        self.other_bone = np.zeros(shape, dtype=np.uint8)
        self.other_marrow = np.zeros(shape, dtype=np.uint8)

    def fractions(self, sd: np.ndarray, cortex_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """Partial-volume fractions of a voxel (width = voxel size) in bone and in marrow."""
        h = _F(self.voxel_mm)
        bone = np.clip(_F(0.5) - sd / h, 0.0, 1.0)
        marrow = np.clip(_F(0.5) - (sd + _F(cortex_mm)) / h, 0.0, 1.0)
        return bone, marrow

    def add_other_bone(self, box: tuple[slice, ...], sd: np.ndarray, cortex_mm: float) -> None:
        """Record unlabelled bone (ribs, ilium) in ``box``; the densest fraction per voxel wins."""
        near = sd < _F(0.5 * self.voxel_mm)
        if not near.any():
            return
        bone, marrow = self.fractions(sd[near], cortex_mm)
        target_b, target_m = self.other_bone[box], self.other_marrow[box]
        target_b[near] = np.maximum(target_b[near], np.rint(bone * 255).astype(np.uint8))
        target_m[near] = np.maximum(target_m[near], np.rint(marrow * 255).astype(np.uint8))

    def box(
        self, centre: np.ndarray, frame: np.ndarray, lo: Sequence[float], hi: Sequence[float]
    ) -> tuple[slice, ...] | None:
        """Voxel slices covering a local (frame) box, or None when it misses the grid."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ras = centre + corners @ frame.T
        ijk = ras @ self.inverse[:3, :3].T + self.inverse[:3, 3]
        start = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        stop = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, self.shape)
        if np.any(stop <= start):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))

    def local(self, box: tuple[slice, ...], centre: np.ndarray, frame: np.ndarray) -> list[np.ndarray]:
        """Local (lateral, anterior, axial) float32 coordinates of the voxel centres in ``box``."""
        steps = self.affine[:3, :3].T @ frame  # row n: local step per voxel along axis n
        offset = (self.affine[:3, 3] - centre) @ frame
        idx = [np.arange(s.start, s.stop, dtype=np.float32) for s in box]
        grids = []
        for c in range(3):
            value = np.float32(offset[c])
            value = value + idx[0][:, None, None] * np.float32(steps[0, c])
            value = value + idx[1][None, :, None] * np.float32(steps[1, c])
            value = value + idx[2][None, None, :] * np.float32(steps[2, c])
            grids.append(value.astype(np.float32, copy=False))
        return grids


def paint_ribs(canvas: Canvas, vertebra: PlacedVertebra, cortex_mm: float) -> None:
    """Ribs: tubes from the costovertebral joint over the transverse process tip around the chest."""
    size = vertebra.size
    b, canal_v, ped_u, ped_ru, ped_rw, ped_end, arch_w, lam = arch_geometry(size)
    index = vertebra.level - 8  # 0 = first rib
    cage_a = float(np.interp(index, [0, 2, 6, 9, 11], [62.0, 105.0, 135.0, 135.0, 120.0]))
    cage_b = float(np.interp(index, [0, 2, 6, 9, 11], [45.0, 75.0, 100.0, 105.0, 95.0]))
    sweep = float(np.interp(index, [0, 9, 10, 11], [2.3, 2.3, 1.5, 0.9]))
    drop = float(np.interp(index, [0, 4, 11], [12.0, 30.0, 20.0]))
    radius = float(np.interp(index, [0, 6, 11], [3.8, 4.6, 4.2]))
    h = size.body_height
    tip = np.array([size.transverse_span / 2 - 2.0, ped_end - 14.0 + 3.0, arch_w + 0.05 * h])
    head = np.array([size.body_width / 2 - 1.0, -0.45 * b, 0.35 * h])
    v0 = tip[1] - 10.0 + cage_b
    start_angle = float(np.arcsin(np.clip((tip[0] + 10.0) / cage_a, 0.0, 0.95)))
    angles = np.linspace(start_angle, start_angle + sweep, 14)
    path = [head, tip]
    for k, phi in enumerate(angles):
        path.append(np.array([cage_a * np.sin(phi), v0 - cage_b * np.cos(phi), tip[2] - drop * (phi - start_angle) / 1.6]))
    path = np.array(path)
    for side in (1.0, -1.0):
        pts = path * (side, 1.0, 1.0)
        for n in range(len(pts) - 1):
            a, c = pts[n], pts[n + 1]
            r = radius - 0.5 if n == 0 else radius
            lo = np.minimum(a, c) - r - 1.0
            hi = np.maximum(a, c) + r + 1.0
            box = canvas.box(vertebra.centre, vertebra.frame, lo, hi)
            if box is None:
                continue
            u, v, w = canvas.local(box, vertebra.centre, vertebra.frame)
            canvas.add_other_bone(box, sd_capsule(u, v, w, a, c, r, r), cortex_mm)


def compress_body(v: np.ndarray, w: np.ndarray, depth_mm: float, anterior: float, posterior: float) -> np.ndarray:
    """The axial coordinate ``w`` of a vertebra whose body is flattened, as by a compression fracture.

    The body keeps ``anterior`` of its height at its front and ``posterior`` at its back wall (a wedge when
    anterior < posterior, a flat body when they are equal); behind the body the factor returns to 1 over
    10 mm, so the arch keeps its height. Painting the vertebra at the returned coordinates shrinks it.
    """
    half = depth_mm / 2
    factor = np.interp(v, [-half - 10.0, -half, half], [1.0, posterior, anterior]).astype(np.float32)
    return (w / factor).astype(np.float32)


def paint_vertebra(canvas: Canvas, vertebra: PlacedVertebra, bone: Bone, rng: np.random.Generator,
                   real_shapes: RealShapeLibrary | None = None, real_level: int | None = None,
                   compression: tuple[float, float] | None = None) -> None:
    """Label the vertebra's voxels (first painter keeps a voxel) and blend its HU with partial volume.

    With ``real_shapes`` and ``real_level``, the real vertebra ``real_level`` stands in for the analytic shape.
    ``compression`` (anterior, posterior height factors) flattens or wedges the body (:func:`compress_body`).
    """
    lo, hi = vertebra_extent(vertebra)
    box = canvas.box(vertebra.centre, vertebra.frame, lo, hi)
    if box is None:
        return
    u, v, w = canvas.local(box, vertebra.centre, vertebra.frame)
    size, level = vertebra.size, vertebra.level
    if compression is not None:
        w = compress_body(v, w, size.body_depth, *compression)
    if level == SACRUM:
        canvas.add_other_bone(box, ilium_sd(u, v, w, vertebra), bone.cortex_mm)
        sd = sacrum_sd(u, v, w, size)
    elif level == 1:
        sd = atlas_sd(u, v, w, size)
    elif real_shapes is not None and real_level is not None:
        sd = real_shapes.signed_distance(real_level, vertebra, u, v, w, rng)
    else:
        sd = np.minimum(body_sd(u, v, w, size), arch_sd(u, v, w, vertebra))
        if level == 2:
            sd = np.minimum(sd, dens_sd(u, v, w, size))
    labels = canvas.labels[box]
    own = (sd <= 0) & (labels == 0)
    labels[own] = level
    near = (sd < _F(0.5 * canvas.voxel_mm)) & ((labels == 0) | own)
    sd_near = sd[near]
    f_bone, f_marrow = canvas.fractions(sd_near, bone.cortex_mm)
    texture = rng.normal(0.0, MARROW_TEXTURE_HU, size=sd_near.shape).astype(np.float32)
    marrow = _F(bone.cancellous_hu) + texture
    if level == SACRUM:
        w_near = w[near]
        for k in range(1, 5):
            line = np.abs(w_near - _F(size.body_height / 2 - k * 0.2 * SACRUM_LENGTH_MM)) < 1.2
            marrow = np.where(line, marrow - _F(FUSED_DISC_DROP_HU), marrow)
    hu = canvas.hu[box]
    old = hu[near]
    hu[near] = (1.0 - f_bone) * old + (f_bone - f_marrow) * _F(bone.cortical_hu) + f_marrow * marrow
    _classify_bone(canvas.tissue[box], near, f_bone, f_marrow, Tissue.CORTEX, Tissue.CANCELLOUS)


def _classify_bone(tissue: np.ndarray, near: np.ndarray, f_bone: np.ndarray, f_marrow: np.ndarray,
                   cortex: Tissue, marrow: Tissue) -> None:
    """A voxel at least half marrow is marrow, else at least half bone is cortex; else it keeps its tissue."""
    classes = tissue[near]
    classes = np.where(f_bone >= 0.5, np.uint8(cortex), classes)
    tissue[near] = np.where(f_marrow >= 0.5, np.uint8(marrow), classes)


def blend_other_bone(canvas: Canvas, subject: Subject) -> None:
    """Paint ribs and ilium (label 0) where no vertebra claimed the voxel, then free their fractions."""
    other = (canvas.other_bone > 0) & (canvas.labels == 0)
    f_bone = canvas.other_bone[other].astype(np.float32) / 255
    f_marrow = canvas.other_marrow[other].astype(np.float32) / 255
    canvas.hu[other] = ((1.0 - f_bone) * canvas.hu[other]
                        + (f_bone - f_marrow) * _F(subject.cortical * OTHER_CORTICAL_FACTOR)
                        + f_marrow * _F(subject.cancellous_base + OTHER_MARROW_OFFSET_HU))
    _classify_bone(canvas.tissue, other, f_bone, f_marrow, Tissue.OTHER_CORTEX, Tissue.OTHER_MARROW)
    canvas.other_bone = canvas.other_marrow = None  # type: ignore[assignment]


def finish_image(hu: np.ndarray, spacing: np.ndarray, noise_hu: float, blur_mm: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Blur (partial volume), add Gaussian noise and store as a scanner would: int16 HU in its range."""
    if blur_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=blur_mm / spacing, mode="nearest", truncate=3.0)
    if noise_hu > 0:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * _F(noise_hu)
    np.clip(hu, *SCANNER_HU_RANGE, out=hu)
    return np.rint(hu).astype(np.int16)
