"""CT spine phantoms: analytic vertebrae, discs, ribs and body in Hounsfield units.

The shapes are defined in the RAS body frame of a :class:`SpineLayout` and
evaluated at the voxel centres of the scan grid, so any orientation, oblique
rotation or anisotropic spacing samples the same anatomy. Bones are built from
approximate signed distance functions (negative inside): the outer 1-1.5 mm is
cortical bone, the rest cancellous. Labels are exact VerSe numbers (ribs,
ilium and soft tissue are 0); the image gets partial volume (Gaussian blur) and
noise. Everything is float32 and each bone is evaluated only in its own
bounding box of voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..anatomy import SACRUM, STANDARD_LEVELS
from ..volume import Volume, VolumeKind
from .layout import PlacedVertebra, SpineLayout, make_spine_layout

__all__ = ["CTPhantom", "make_ct_phantom", "random_ct_phantom", "orientation_matrix", "DEFAULT_CT_LEVELS"]

DEFAULT_CT_LEVELS: list[int] = list(range(15, 25)) + [SACRUM]

HU_MIN, HU_MAX = -1024.0, 3071.0
_AIR, _LUNG, _FAT, _MUSCLE, _ORGAN, _CSF, _CORD = -1000.0, -850.0, -100.0, 50.0, 45.0, 15.0, 35.0
_SACRUM_LENGTH = 100.0
_F = np.float32


@dataclass(frozen=True)
class CTPhantom:
    """A synthetic CT scan with its exact vertebra label map and the layout it was drawn from."""

    image: Volume  # int16 Hounsfield units, kind INTENSITY
    labels: Volume  # uint8 VerSe numbers, 0 background, kind LABEL, same grid as image
    layout: SpineLayout


# ----------------------------------------------------------------------------- grid


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


def _grid_affine(direction: np.ndarray, spacing: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the grid with these axes that covers the RAS box [low, high]."""
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    along = corners @ direction  # coordinate of each corner along each grid axis
    start, stop = along.min(axis=0), along.max(axis=0)
    shape = tuple(int(n) for n in np.floor((stop - start) / spacing + 1e-6).astype(int) + 1)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[np.newaxis, :]
    affine[:3, 3] = direction @ start
    return affine, shape  # type: ignore[return-value]


# ------------------------------------------------------------------ signed distances


def _sd_ellipsoid(u, v, w, centre, radii):
    """Approximate signed distance (mm) to an axis-aligned ellipsoid in local coordinates."""
    ru, rv, rw = radii
    rho = np.sqrt(((u - centre[0]) / ru) ** 2 + ((v - centre[1]) / rv) ** 2 + ((w - centre[2]) / rw) ** 2)
    return (rho - 1.0) * _F((ru * rv * rw) ** (1.0 / 3.0))


def _sd_capsule(u, v, w, a, b, r0, r1, squash=1.0):
    """Signed distance to a tapered capsule from point a (radius r0) to b (radius r1).

    ``squash`` > 1 flattens it laterally (u is stretched by that factor).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a_s = a * (squash, 1.0, 1.0)
    d = b * (squash, 1.0, 1.0) - a_s
    length2 = float(d @ d)
    pu, pv, pw = u * _F(squash) - _F(a_s[0]), v - _F(a_s[1]), w - _F(a_s[2])
    t = np.clip((pu * _F(d[0]) + pv * _F(d[1]) + pw * _F(d[2])) * _F(1.0 / length2), 0.0, 1.0)
    du, dv, dw = pu - t * _F(d[0]), pv - t * _F(d[1]), pw - t * _F(d[2])
    return np.sqrt(du * du + dv * dv + dw * dw) - (_F(r0) + t * _F(r1 - r0))


def _sd_rounded_prism(sd_section, sd_axial, rounding):
    """Intersection of a cross-section and an axial slab with rounded edges."""
    r = _F(rounding)
    a, b = sd_section + r, sd_axial + r
    outside = np.sqrt(np.maximum(a, 0) ** 2 + np.maximum(b, 0) ** 2)
    return outside + np.minimum(np.maximum(a, b), 0) - r


def _superellipse_rho(x, y, a, b, p):
    return (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)


# ------------------------------------------------------------------ vertebra shapes


@dataclass(frozen=True)
class _Bone:
    cortical_hu: float
    cancellous_hu: float
    cortex_mm: float


def _body_sd(u, v, w, size, waist=0.07, dent_frac=0.12, concavity=1.5):
    """Vertebral body: superelliptic cylinder, concave waist, kidney-shaped back wall, concave endplates."""
    half_h = size.body_height / 2
    a, b = size.body_width / 2, size.body_depth / 2
    s = np.clip(w / _F(half_h), -1.0, 1.0)
    squeeze = 1.0 - _F(waist) * (1.0 - s * s)
    dent = _F(dent_frac * size.body_depth) * np.exp(-((u / _F(0.38 * a)) ** 2)) * np.clip(-v / _F(b), 0.0, 1.0) ** 2
    rho = _superellipse_rho(u, v - dent, a * squeeze, b * squeeze, 2.6)
    sd_section = (rho - 1.0) * _F(np.sqrt(a * b)) * squeeze
    cup = _F(concavity) * np.clip(1.0 - rho * rho, 0.0, 1.0)
    sd_axial = np.abs(w) - (_F(half_h) - cup)
    return _sd_rounded_prism(sd_section, sd_axial, 2.0)


def _arch_geometry(size):
    """Positions (local mm) shared by the neural arch parts."""
    b = size.body_depth / 2
    canal_v = -b - size.canal_depth / 2 + 1.0
    ped_u = size.canal_width / 2 + np.clip(0.09 * size.body_width + 1.0, 2.5, 6.5) * 0.7
    ped_ru = float(np.clip(0.09 * size.body_width + 1.0, 2.5, 6.5))
    ped_rw = float(np.clip(0.3 * size.body_height, 3.5, 8.0))
    ped_end = -b - size.pedicle_length
    arch_w = 0.08 * size.body_height
    lamina = float(np.clip(0.25 * size.body_height, 3.5, 7.5))
    return b, canal_v, ped_u, ped_ru, ped_rw, ped_end, arch_w, lamina


def _canal_sd(u, v, w, size):
    b, canal_v, *_ = _arch_geometry(size)
    rho = np.sqrt((u / _F(size.canal_width / 2)) ** 2 + ((v - _F(canal_v)) / _F(size.canal_depth / 2)) ** 2)
    return (rho - 1.0) * _F(np.sqrt(size.canal_width * size.canal_depth) / 2)


def _arch_sd(u, v, w, vertebra: PlacedVertebra):
    """Pedicles, laminae, spinous and transverse processes, articular processes."""
    size, level = vertebra.size, vertebra.level
    b, canal_v, ped_u, ped_ru, ped_rw, ped_end, arch_w, lam = _arch_geometry(size)
    h = size.body_height
    cervical, thoracic = level <= 7, 8 <= level <= 19
    au = np.abs(u)  # both sides at once: mirror symmetric parts

    # Pedicles: elliptic cylinders from the back of the body to the arch.
    mid_v = 0.5 * (-b + 3.0 + ped_end)
    half_len = 0.5 * (-b + 3.0 - ped_end)
    rho = np.sqrt(((au - _F(ped_u)) / _F(ped_ru)) ** 2 + ((w - _F(arch_w + 0.1 * h)) / _F(ped_rw)) ** 2)
    sd = _sd_rounded_prism((rho - 1.0) * _F(np.sqrt(ped_ru * ped_rw)), np.abs(v - _F(mid_v)) - _F(half_len), 1.5)

    # Laminae: the posterior half of a ring around the canal, shingled (lower part more posterior).
    ring_v = v - _F(canal_v) - _F(0.3) * (w - _F(arch_w))
    cw, cd = size.canal_width / 2, size.canal_depth / 2
    outer = (np.sqrt((u / _F(cw + lam)) ** 2 + (ring_v / _F(cd + lam)) ** 2) - 1.0) * _F(np.sqrt((cw + lam) * (cd + lam)))
    inner = (np.sqrt((u / _F(cw)) ** 2 + (ring_v / _F(cd)) ** 2) - 1.0) * _F(np.sqrt(cw * cd))
    ring = np.maximum(np.maximum(outer, -inner), ring_v - _F(1.0))
    sd = np.minimum(sd, _sd_rounded_prism(ring, np.abs(w - _F(arch_w)) - _F(0.36 * h), 1.5))

    # Spinous process: from the back of the arch, posterior and dropping.
    start = np.array([0.0, canal_v - cd - 0.5 * lam, arch_w])
    tip = start + np.array([0.0, -size.spinous_length, -size.spinous_drop])
    r_sp = float(np.clip(0.33 * h, 3.5, 10.0))
    squash = float(np.clip(r_sp / 4.0, 1.0, 2.6))
    sd = np.minimum(sd, _sd_capsule(u, v, w, start, tip, r_sp, 0.75 * r_sp, squash))

    # Transverse processes.
    half_span = size.transverse_span / 2
    r_tp = float(np.clip(0.2 * h, 3.0, 6.0))
    if cervical:
        root_a = np.array([size.body_width / 2 - 1.0, 0.1 * b, 0.0])
        root_p = np.array([ped_u, ped_end + 1.0, arch_w])
        tip_c = np.array([half_span, -0.2 * b, -1.0])
        tp = np.minimum(_sd_capsule(au, v, w, root_a, tip_c, 3.5, 3.5),
                        _sd_capsule(au, v, w, root_p, tip_c, 3.5, 4.0))
        # Foramen transversarium between the two bars, halfway to the tip.
        hole_u = 0.5 * (max(root_a[0], root_p[0]) + half_span)
        f_a = (hole_u - root_a[0]) / max(half_span - root_a[0], 1e-3)
        f_p = (hole_u - root_p[0]) / max(half_span - root_p[0], 1e-3)
        v_a = root_a[1] + f_a * (tip_c[1] - root_a[1])
        v_p = root_p[1] + f_p * (tip_c[1] - root_p[1])
        radius = float(np.clip(0.5 * (v_a - v_p) - 1.5, 0.0, 2.8))
        hole = np.sqrt((au - _F(hole_u)) ** 2 + (v - _F(0.5 * (v_a + v_p))) ** 2) - _F(radius)
        tp = np.maximum(tp, -hole)
    else:
        root = np.array([ped_u, ped_end, arch_w + 0.1 * h])
        if thoracic:
            tip_v, tip_w, r_tip = ped_end - 14.0, arch_w + 0.05 * h, r_tp + 1.0
        else:
            tip_v, tip_w, r_tip = ped_end + 2.0, arch_w, 0.8 * r_tp
        tip_p = np.array([half_span, tip_v, tip_w])
        tp = _sd_capsule(au, v, w, root, tip_p, r_tp, r_tip, 1.0)
    sd = np.minimum(sd, tp)

    # Articular processes (facets): superior ones up, inferior ones down.
    r_f = float(np.clip(0.27 * h, 3.0, 7.5))
    sup = _sd_ellipsoid(au, v, w, (ped_u + 2.0, ped_end - 1.0, arch_w + 0.5 * h), (r_f, r_f + 1.0, 0.3 * h + 1.0))
    inf = _sd_ellipsoid(au, v, w, (ped_u - 1.0, ped_end - 5.0, arch_w - 0.55 * h), (r_f, r_f + 1.0, 0.3 * h + 1.0))
    return np.minimum(sd, np.minimum(sup, inf))


def _atlas_sd(u, v, w, size):
    """C1: anterior arch, lateral masses and posterior arch around a large canal; no body."""
    front = 10.0
    back = -(size.canal_depth + 5.0)
    v0, rv = 0.5 * (front + back), 0.5 * (front - back)
    ru = size.canal_width / 2 + 4.0
    rho = np.sqrt((u / _F(ru)) ** 2 + ((v - _F(v0)) / _F(rv)) ** 2)
    tube = np.sqrt(((rho - 1.0) * _F(np.sqrt(ru * rv))) ** 2 + (w / _F(1.4)) ** 2) - _F(3.5)
    au = np.abs(u)
    masses = _sd_ellipsoid(au, v, w, (ru - 2.0, v0 + 3.0, 0.0), (7.0, 9.0, 9.0))
    tip = np.array([size.transverse_span / 2, v0 + 1.0, 0.0])
    tp = _sd_capsule(au, v, w, np.array([ru + 2.0, v0 + 3.0, 0.0]), tip, 5.5, 4.5)
    hole = np.sqrt((au - _F(ru + 7.0)) ** 2 + (v - _F(v0 + 3.0)) ** 2) - _F(2.3)
    tp = np.maximum(tp, -hole)
    tubercle = _sd_ellipsoid(u, v, w, (0.0, back - 2.0, 0.0), (4.0, 4.0, 5.0))
    return np.minimum(np.minimum(tube, masses), np.minimum(tp, tubercle))


def _dens_sd(u, v, w, size):
    """C2's dens: a peg rising from the top of the body into C1's ring."""
    top = size.body_height / 2
    return _sd_capsule(u, v, w, np.array([0.0, 0.5, top - 2.0]), np.array([0.0, 0.0, top + 14.0]), 5.5, 4.5)


def _sacrum_sd(u, v, w, size):
    """Sacrum: fused, tapering bodies with wide alae, canal and foramina, concave in front."""
    top = size.body_height / 2
    t = np.clip((_F(top) - w) / _F(_SACRUM_LENGTH), 0.0, 1.0)
    bend = _F(-9.0) * 4.0 * t * (1.0 - t)  # posterior bulge of the fused column
    vv = v - bend
    a = _F(size.body_width / 2) * (1.0 - 0.72 * t)
    b = _F(size.body_depth / 2) * (1.0 - 0.55 * t)
    rho = _superellipse_rho(u, vv, a, b, 2.4)
    section = (rho - 1.0) * np.sqrt(a * b)
    axial = np.maximum(w - _F(top), _F(top - _SACRUM_LENGTH) - w)
    sd = _sd_rounded_prism(section, axial, 2.0)
    # Alae and lateral masses behind and beside the bodies.
    la = _F(size.transverse_span / 2) * (1.0 - t) ** 1.1 + _F(8.0)
    lb = _F(0.45 * size.body_depth) * (1.0 - 0.6 * t) + _F(5.0)
    lv = vv + b * 0.55
    lrho = np.sqrt((u / la) ** 2 + (lv / lb) ** 2)
    lateral = _sd_rounded_prism((lrho - 1.0) * np.sqrt(la * lb), np.maximum(w - _F(top - 4.0), _F(top - 0.85 * _SACRUM_LENGTH) - w), 4.0)
    sd = np.minimum(sd, lateral)
    # Dorsal plate with the median crest.
    cw = _F(size.canal_width / 2) * (1.0 - 0.6 * t)
    cd = _F(size.canal_depth / 2) * (1.0 - 0.5 * t)
    canal_v = -b - cd + 1.0
    dorsal = _sd_rounded_prism((np.sqrt((u / (cw + 5.0)) ** 2 + ((vv - canal_v) / (cd + 5.0)) ** 2) - 1.0) * (cw + cd + 10.0) / 2,
                               np.maximum(w - _F(top - 2.0), _F(top - 0.8 * _SACRUM_LENGTH) - w), 2.0)
    crest = _sd_capsule(u, vv, w, np.array([0.0, -size.body_depth / 2 - size.canal_depth - 5.0, top - 8.0]),
                        np.array([0.0, -size.body_depth / 2 - size.canal_depth + 2.0, top - 70.0]), 3.5, 2.5, 1.6)
    sd = np.minimum(sd, np.minimum(dorsal, crest))
    # Sacral canal and four pairs of foramina.
    canal = (np.sqrt((u / cw) ** 2 + ((vv - canal_v) / cd) ** 2) - 1.0) * np.sqrt(cw * cd)
    canal = np.maximum(canal, w - _F(top + 1.0))
    sd = np.maximum(sd, -canal)
    au = np.abs(u)
    for k, tk in enumerate((0.22, 0.42, 0.6, 0.76)):
        centre_w = top - tk * _SACRUM_LENGTH
        fu = size.body_width / 2 * (1.0 - 0.72 * tk) + 5.0
        radius = 4.5 - 0.6 * k
        hole = np.sqrt((au - _F(fu)) ** 2 + (w - _F(centre_w)) ** 2) - _F(radius)
        sd = np.maximum(sd, -hole)
    return sd


def _ilium_sd(u, v, w, vertebra: PlacedVertebra):
    """Both iliac wings beside the sacro-iliac joints, flaring up and out (not labelled)."""
    size, frame = vertebra.size, vertebra.frame
    top = size.body_height / 2
    to_local = frame.T  # RAS vector -> sacral-frame components
    au = np.abs(u)
    joint = np.array([size.transverse_span / 2 * 0.8 + 4.0, -0.25 * size.body_depth, top - 30.0])
    flare = np.deg2rad(28.0)
    e1 = to_local @ np.array([0.55, 0.835, 0.0])  # lateral-anterior, horizontal (right side)
    e2 = to_local @ np.array([np.sin(flare), 0.0, np.cos(flare)])  # up and out
    e2 -= (e2 @ e1) * e1
    e2 /= np.linalg.norm(e2)
    normal = np.cross(e1, e2)
    pu, pv, pw = au - _F(joint[0]), v - _F(joint[1]), w - _F(joint[2])
    s = pu * _F(e1[0]) + pv * _F(e1[1]) + pw * _F(e1[2])
    h = pu * _F(e2[0]) + pv * _F(e2[1]) + pw * _F(e2[2])
    n = pu * _F(normal[0]) + pv * _F(normal[1]) + pw * _F(normal[2])
    rho = np.sqrt(((s - _F(35.0)) / _F(45.0)) ** 2 + ((h - _F(35.0)) / _F(55.0)) ** 2)
    thickness = _F(3.0) + _F(9.0) * np.clip(1.0 - (s + _F(5.0)) / _F(35.0), 0.0, 1.0)
    plate = np.maximum((rho - 1.0) * _F(50.0), np.abs(n) - thickness)
    return np.maximum(np.maximum(plate, -s - _F(4.0)), -h - _F(15.0))


# --------------------------------------------------------------------- the renderer


class _Canvas:
    """The scan grid plus the HU and label arrays being painted."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, int, int]):
        self.affine = affine
        self.shape = shape
        self.hu = np.full(shape, _AIR, dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8)
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

    def add_other_bone(self, box, sd: np.ndarray, cortex_mm: float) -> None:
        near = sd < _F(0.5 * self.voxel_mm)
        if not near.any():
            return
        bone, marrow = self.fractions(sd[near], cortex_mm)
        target_b, target_m = self.other_bone[box], self.other_marrow[box]
        target_b[near] = np.maximum(target_b[near], np.rint(bone * 255).astype(np.uint8))
        target_m[near] = np.maximum(target_m[near], np.rint(marrow * 255).astype(np.uint8))

    def box(self, centre: np.ndarray, frame: np.ndarray, lo: Sequence[float], hi: Sequence[float]):
        """Voxel slices covering a local (frame) box, or None when it misses the grid."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ras = centre + corners @ frame.T
        ijk = ras @ self.inverse[:3, :3].T + self.inverse[:3, 3]
        start = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        stop = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, self.shape)
        if np.any(stop <= start):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))

    def local(self, box, centre: np.ndarray, frame: np.ndarray):
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


def _level_index(level: int) -> int:
    return STANDARD_LEVELS.index(level)


def _vertebra_extent(vertebra: PlacedVertebra):
    s = vertebra.size
    if vertebra.level == SACRUM:
        reach = s.transverse_span / 2 + 75.0
        return (-reach, -s.body_depth / 2 - s.canal_depth - 25.0, s.body_height / 2 - _SACRUM_LENGTH - 3.0), (
            reach, s.body_depth / 2 + 45.0, s.body_height / 2 + 70.0)
    lateral = max(s.transverse_span / 2, s.body_width / 2) + 8.0
    back = s.body_depth / 2 + s.canal_depth + 6.0 + s.spinous_length + 10.0
    up = s.body_height / 2 + 6.0 + (18.0 if vertebra.level == 2 else 0.0) + 0.5 * s.body_height
    down = s.body_height / 2 + s.spinous_drop + 0.6 * s.body_height + 10.0
    return (-lateral, -back, -down), (lateral, s.body_depth / 2 + 12.0, up)


def _paint_discs(canvas: _Canvas, layout: SpineLayout) -> None:
    """Discs fill the gap between neighbouring endplates (annulus brighter than nucleus)."""
    for upper, lower, disc in zip(layout.vertebrae[:-1], layout.vertebrae[1:], layout.discs):
        if upper.level == 1:
            continue  # no disc between atlas and axis
        reach = max(disc.width, disc.depth) / 2 + 4.0
        span = disc.height + 12.0
        box = canvas.box(disc.centre, disc.frame, (-reach, -reach, -span), (reach, reach, span))
        if box is None:
            continue
        u, v, w = canvas.local(box, disc.centre, disc.frame)
        rho = _superellipse_rho(u, v, _F(disc.width / 2 * 0.97), _F(disc.depth / 2 * 0.97), 2.6)
        del u, v, w
        pts_up = canvas.local(box, upper.centre, upper.frame)[2]
        inside = (rho <= 1.0) & (pts_up <= _F(-upper.size.body_height / 2 + 3.0))
        del pts_up
        pts_lo = canvas.local(box, lower.centre, lower.frame)[2]
        inside &= pts_lo >= _F(lower.size.body_height / 2 - 3.0)
        hu = np.where(rho < 0.6, _F(75.0), _F(100.0))
        canvas.hu[box][inside] = hu[inside]


def _paint_canal(canvas: _Canvas, vertebra: PlacedVertebra, disc_below: float) -> None:
    size = vertebra.size
    b, canal_v, *_ = _arch_geometry(size)
    half = size.body_height / 2 + disc_below + 2.0
    lo = (-size.canal_width / 2 - 2, canal_v - size.canal_depth / 2 - 8, -half)
    hi = (size.canal_width / 2 + 2, canal_v + size.canal_depth / 2 + 2, size.body_height / 2 + 2)
    box = canvas.box(vertebra.centre, vertebra.frame, lo, hi)
    if box is None:
        return
    u, v, w = canvas.local(box, vertebra.centre, vertebra.frame)
    ring_v = v - _F(0.3) * np.minimum(w, 0)
    rho = np.sqrt((u / _F(size.canal_width / 2)) ** 2 + ((ring_v - _F(canal_v)) / _F(size.canal_depth / 2)) ** 2)
    value = np.where(rho < 0.45, _F(_CORD if vertebra.level <= 20 else _CSF), _F(_CSF))
    inside = rho <= 1.0
    canvas.hu[box][inside] = value[inside]


def _paint_ribs(canvas: _Canvas, vertebra: PlacedVertebra, cortical: float) -> None:
    """Ribs: tubes from the costovertebral joint over the transverse process tip around the chest."""
    size = vertebra.size
    b, canal_v, ped_u, ped_ru, ped_rw, ped_end, arch_w, lam = _arch_geometry(size)
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
    t = cortical
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
            canvas.add_other_bone(box, _sd_capsule(u, v, w, a, c, r, r), t)


def _paint_vertebra(canvas: _Canvas, vertebra: PlacedVertebra, bone: _Bone, rng: np.random.Generator) -> None:
    """Label the vertebra's voxels (first painter keeps a voxel) and blend its HU with partial volume."""
    lo, hi = _vertebra_extent(vertebra)
    box = canvas.box(vertebra.centre, vertebra.frame, lo, hi)
    if box is None:
        return
    u, v, w = canvas.local(box, vertebra.centre, vertebra.frame)
    size, level = vertebra.size, vertebra.level
    if level == SACRUM:
        canvas.add_other_bone(box, _ilium_sd(u, v, w, vertebra), bone.cortex_mm)
        sd = _sacrum_sd(u, v, w, size)
    elif level == 1:
        sd = _atlas_sd(u, v, w, size)
    else:
        sd = np.minimum(_body_sd(u, v, w, size), _arch_sd(u, v, w, vertebra))
        if level == 2:
            sd = np.minimum(sd, _dens_sd(u, v, w, size))
    labels = canvas.labels[box]
    own = (sd <= 0) & (labels == 0)
    labels[own] = level
    near = (sd < _F(0.5 * canvas.voxel_mm)) & ((labels == 0) | own)
    sd_near = sd[near]
    f_bone, f_marrow = canvas.fractions(sd_near, bone.cortex_mm)
    texture = rng.normal(0.0, 35.0, size=sd_near.shape).astype(np.float32)
    marrow = _F(bone.cancellous_hu) + texture
    if level == SACRUM:  # faint remnants of the fused discs
        w_near = w[near]
        for k in range(1, 5):
            line = np.abs(w_near - _F(size.body_height / 2 - k * 0.2 * _SACRUM_LENGTH)) < 1.2
            marrow = np.where(line, marrow - _F(70.0), marrow)
    hu = canvas.hu[box]
    old = hu[near]
    hu[near] = (1.0 - f_bone) * old + (f_bone - f_marrow) * _F(bone.cortical_hu) + f_marrow * marrow


def _spine_axis_tables(layout: SpineLayout):
    """Functions of RAS z: continuous level index and the spine centre (x, y)."""
    z = np.array([v.centre[2] for v in layout.vertebrae])
    index = np.array([_level_index(v.level) for v in layout.vertebrae], dtype=float)
    if len(z) >= 2:
        slope_top = (index[1] - index[0]) / (z[1] - z[0])
        slope_bottom = (index[-1] - index[-2]) / (z[-1] - z[-2])
    else:
        s = layout.vertebrae[0].size
        slope_top = slope_bottom = -1.0 / (s.body_height + s.disc_below)
    line = layout.centre_line

    def level_at(zq: float) -> float:
        if zq > z[0]:
            return float(index[0] + (zq - z[0]) * slope_top)
        if zq < z[-1]:
            return float(index[-1] + (zq - z[-1]) * slope_bottom)
        return float(np.interp(zq, z[::-1], index[::-1]))

    def centre_at(zq: float) -> tuple[float, float]:
        zs = line[::-1, 2]
        return float(np.interp(zq, zs, line[::-1, 0])), float(np.interp(zq, zs, line[::-1, 1]))

    return level_at, centre_at


# Per-level tables (index 0 = C1 ... 23 = L5, 24 = sacrum) for the body outline.
_TABLE_INDEX = [0, 6, 7, 9, 14, 19, 22, 24, 26]
_BODY_HALF_WIDTH = [58.0, 68.0, 150.0, 165.0, 160.0, 158.0, 160.0, 175.0, 180.0]
_BODY_HALF_DEPTH = [55.0, 60.0, 95.0, 110.0, 118.0, 112.0, 108.0, 105.0, 100.0]
_BACK_DISTANCE = [58.0, 70.0, 80.0, 75.0, 72.0, 82.0, 92.0, 80.0, 60.0]


@dataclass(frozen=True)
class _Subject:
    """Random per-subject soft-tissue and bone parameters (independent of the scan grid)."""

    body_scale: float
    fat_mm: float
    contrast: bool
    cancellous_base: float
    cortical: float
    cortex_mm: float
    gas: np.ndarray  # (N, 4): level index, lateral mm, anterior mm, radius mm
    level_jitter: np.ndarray  # per standard level: cancellous HU offset
    table: bool


def _draw_subject(rng: np.random.Generator) -> _Subject:
    count = int(rng.integers(6, 18))
    gas = np.stack([rng.uniform(18.0, 25.0, count), rng.uniform(-90.0, 90.0, count),
                    rng.uniform(40.0, 140.0, count), rng.uniform(4.0, 12.0, count)], axis=1)
    return _Subject(
        body_scale=float(rng.uniform(0.9, 1.1)),
        fat_mm=float(rng.uniform(8.0, 30.0)),
        contrast=bool(rng.random() < 0.5),
        cancellous_base=float(rng.uniform(110.0, 290.0)),  # osteoporotic to young: real lumbar cores 50-250 HU
        cortical=float(rng.uniform(700.0, 1050.0)),
        cortex_mm=float(rng.uniform(1.0, 1.5)),
        gas=gas,
        level_jitter=rng.normal(0.0, 12.0, len(STANDARD_LEVELS)),
        table=bool(rng.random() < 0.7),
    )


def _paint_background(canvas: _Canvas, layout: SpineLayout, subject: _Subject, table_y: float) -> None:
    """Body outline, fat, muscles, lungs, vessels, organs, gas and the table, slice by slice along S."""
    affine = canvas.affine
    s_axis = int(np.argmax(np.abs(affine[2, :3])))
    plane = [n for n in range(3) if n != s_axis]
    n0, n1 = canvas.shape[plane[0]], canvas.shape[plane[1]]
    i0 = np.arange(n0, dtype=np.float32)[:, None]
    i1 = np.arange(n1, dtype=np.float32)[None, :]
    x2 = _F(affine[0, 3]) + i0 * _F(affine[0, plane[0]]) + i1 * _F(affine[0, plane[1]])
    y2 = _F(affine[1, 3]) + i0 * _F(affine[1, plane[0]]) + i1 * _F(affine[1, plane[1]])
    level_at, centre_at = _spine_axis_tables(layout)
    sizes = {v.level: v.size for v in layout.vertebrae}
    first_size = layout.vertebrae[0].size

    for k in range(canvas.shape[s_axis]):
        z = affine[2, 3] + k * affine[2, s_axis]
        lc = level_at(z)
        xc, yc = centre_at(z)
        dx, dy = x2 - _F(xc), y2 - _F(yc)
        a = np.interp(lc, _TABLE_INDEX, _BODY_HALF_WIDTH) * subject.body_scale
        bb = np.interp(lc, _TABLE_INDEX, _BODY_HALF_DEPTH) * subject.body_scale
        back = np.interp(lc, _TABLE_INDEX, _BACK_DISTANCE) * (0.5 + 0.5 * subject.body_scale)
        cy = -back + bb
        ex, ey = dx / _F(a), (dy - _F(cy)) / _F(bb)
        r_body = np.sqrt(ex * ex + ey * ey)
        fat = subject.fat_mm * (0.5 if lc < 7 else 1.0)
        inner = 1.0 - fat / min(a, bb)
        sl = np.where(r_body <= 1.0, _F(_FAT), _F(_AIR))
        sl = np.where(r_body <= inner, _F(_ORGAN), sl)
        level_ref = STANDARD_LEVELS[int(np.clip(round(lc), 0, 24))]
        size = sizes.get(level_ref, first_size)
        half_w, half_d = size.body_width / 2, size.body_depth / 2
        # Paraspinal muscles behind the arches; fat between them and the skin.
        para = ((np.abs(dx) - _F(half_w * 0.9 + 12.0)) / _F(half_w * 0.9 + 18.0)) ** 2 + ((dy + _F(half_d + 30.0)) / _F(28.0 + 0.2 * half_d)) ** 2
        sl = np.where((para <= 1.0) & (r_body <= inner + 0.02), _F(_MUSCLE + 5.0), sl)
        if 7.5 <= lc <= 20.5:  # chest: lungs left and right, anterior to the ribs
            cage_a = np.interp(lc - 7.0, [0, 2, 6, 9, 11, 13], [62.0, 105.0, 135.0, 135.0, 120.0, 110.0]) - 10.0
            cage_b = np.interp(lc - 7.0, [0, 2, 6, 9, 11, 13], [45.0, 75.0, 100.0, 105.0, 95.0, 90.0]) - 8.0
            v0 = -half_d - size.pedicle_length - 10.0 + cage_b + 6.0
            cage = (dx / _F(cage_a)) ** 2 + ((dy - _F(v0)) / _F(cage_b)) ** 2
            front = np.interp(lc, [7.5, 15.0, 18.0, 19.5, 20.5], [200.0, 200.0, 20.0, -10.0, -25.0])
            mediastinum = np.abs(dx + _F(8.0)) < _F(half_w + 12.0) + np.maximum(dy - _F(half_d), 0) * _F(0.45)
            lung = (cage <= 1.0) & ~mediastinum & (dy < _F(front)) & (np.abs(dx) > _F(half_w + 10.0))
            sl = np.where(lung, _F(_LUNG), sl)
        if 7.0 <= lc <= 22.5:  # descending aorta, left-anterior of the bodies
            ax, ay = -0.55 * half_w - 4.0, half_d + 13.0
            aorta = (dx - _F(ax)) ** 2 + (dy - _F(ay)) ** 2 <= _F(12.0 ** 2)
            sl = np.where(aorta, _F(180.0 if subject.contrast else 42.0), sl)
        if lc <= 10.0:  # trachea (air) in front of the cervical and upper thoracic spine
            tr = (dx / _F(9.0)) ** 2 + ((dy - _F(half_d + 20.0)) / _F(8.0)) ** 2 <= 1.0
            sl = np.where(tr, _F(_AIR), sl)
        if lc >= 18.5:  # abdomen: fatty retroperitoneum and mesentery around the organs
            fatty = (r_body <= inner) & ((dx / _F(135.0)) ** 2 + ((dy - _F(half_d + 30.0)) / _F(half_d + 45.0)) ** 2 <= 1.0)
            sl = np.where(fatty, _F(-70.0 if lc > 19.5 else 0.0), sl)
            bowel = fatty & (dy > _F(half_d + 35.0)) & (np.cos(dx * _F(0.09)) * np.cos(dy * _F(0.08) + _F(lc)) > _F(-0.2))
            sl = np.where(bowel, _F(35.0), sl)
        if 18.5 <= lc <= 23.5:  # psoas muscles and kidneys
            grow = np.clip((lc - 18.5) / 5.0, 0.0, 1.0)
            psoas = ((np.abs(dx) - _F(half_w + 8.0 + 10.0 * grow)) / _F(10.0 + 12.0 * grow)) ** 2 + (dy / _F(12.0 + 6.0 * grow)) ** 2
            sl = np.where(psoas <= 1.0, _F(_MUSCLE), sl)
            if lc <= 22.0:
                kid = ((np.abs(dx) - _F(75.0)) / _F(28.0)) ** 2 + ((dy - _F(-5.0)) / _F(24.0)) ** 2
                sl = np.where(kid <= 1.0, _F(150.0 if subject.contrast else 32.0), sl)
        if 16.5 <= lc <= 20.5:  # liver on the right
            extent = np.sqrt(max(1.0 - ((lc - 18.5) / 2.2) ** 2, 0.0))
            liver = ((dx - _F(95.0)) ** 2 + (dy - _F(70.0)) ** 2 <= _F((95.0 * extent) ** 2)) & (r_body <= inner)
            sl = np.where(liver & (sl != _F(_LUNG)), _F(58.0), sl)
        if lc >= 20.0:  # bowel with gas pockets in front
            for g_level, g_x, g_y, g_r in subject.gas:
                dz = (lc - g_level) * 30.0
                if abs(dz) < g_r:
                    rr = g_r * g_r - dz * dz
                    pocket = ((dx - _F(g_x)) ** 2 + (dy - _F(half_d + g_y)) ** 2 <= _F(rr)) & (r_body <= inner)
                    sl = np.where(pocket, _F(-900.0), sl)
        if subject.table:
            plate = (y2 < _F(table_y)) & (y2 > _F(table_y - 14.0))
            skin = plate & ((y2 > _F(table_y - 2.5)) | (y2 < _F(table_y - 11.5)))
            sl = np.where(plate, np.where(skin, _F(250.0), _F(-850.0)), sl)
        index = [slice(None)] * 3
        index[s_axis] = k
        canvas.hu[tuple(index)] = sl


def _render(layout: SpineLayout, subject: _Subject, spacing: np.ndarray, direction: np.ndarray,
            cut: tuple[float, float] | None, noise_hu: float, blur_mm: float, margin_mm: float,
            rng: np.random.Generator) -> CTPhantom:
    low, high = layout.bounds(margin_mm)
    # Reach the skin of the back (and the table) behind the spine.
    level_at, centre_at = _spine_axis_tables(layout)
    backs = []
    for v in layout.vertebrae:
        lc = _level_index(v.level)
        backs.append(v.centre[1] - np.interp(lc, _TABLE_INDEX, _BACK_DISTANCE) * (0.5 + 0.5 * subject.body_scale))
    table_y = float(min(backs)) - 1.0
    low[1] = min(low[1], table_y - 8.0 - margin_mm * 0.5)
    if cut is not None:
        high[2], low[2] = min(high[2], cut[0]), max(low[2], cut[1])
    affine, shape = _grid_affine(direction, spacing, low, high)
    canvas = _Canvas(affine, shape)

    _paint_background(canvas, layout, subject, table_y)
    _paint_discs(canvas, layout)
    for n, vertebra in enumerate(layout.vertebrae):
        if vertebra.level != SACRUM:
            _paint_canal(canvas, vertebra, vertebra.size.disc_below)
    for vertebra in layout.vertebrae:
        if vertebra.size.has_ribs:
            _paint_ribs(canvas, vertebra, subject.cortex_mm)
    for vertebra in layout.vertebrae:
        idx = _level_index(vertebra.level)
        cancellous = subject.cancellous_base - 3.0 * idx + subject.level_jitter[idx]
        if vertebra.level == SACRUM:
            cancellous -= 40.0
        _paint_vertebra(canvas, vertebra, _Bone(subject.cortical, cancellous, subject.cortex_mm), rng)
    # Ribs and ilium (label 0) where no vertebra claimed the voxel.
    other = (canvas.other_bone > 0) & (canvas.labels == 0)
    f_bone = canvas.other_bone[other].astype(np.float32) / 255
    f_marrow = canvas.other_marrow[other].astype(np.float32) / 255
    canvas.hu[other] = ((1.0 - f_bone) * canvas.hu[other] + (f_bone - f_marrow) * _F(subject.cortical * 0.85)
                        + f_marrow * _F(subject.cancellous_base - 60.0))
    del other, f_bone, f_marrow
    canvas.other_bone = canvas.other_marrow = None  # type: ignore[assignment]

    hu = canvas.hu
    if blur_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=blur_mm / spacing, mode="nearest", truncate=3.0)
    if noise_hu > 0:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * _F(noise_hu)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    image = Volume(np.rint(hu).astype(np.int16), affine, VolumeKind.INTENSITY)
    return CTPhantom(image=image, labels=Volume(canvas.labels, affine, VolumeKind.LABEL), layout=layout)


def _check_levels(levels: Sequence[int]) -> list[int]:
    levels = [int(level) for level in levels]
    if not levels:
        raise ValueError("levels must name at least one vertebra")
    if any(level not in STANDARD_LEVELS for level in levels):
        raise ValueError(f"levels must be VerSe numbers from {STANDARD_LEVELS}, got {levels}")
    first = _level_index(levels[0])
    if [_level_index(level) for level in levels] != list(range(first, first + len(levels))):
        raise ValueError(f"levels must be consecutive head-to-foot entries of {STANDARD_LEVELS}, got {levels}")
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
    subject = _draw_subject(np.random.default_rng(subject_seed))
    cut = _cut_planes(layout, np.random.default_rng(cut_seed)) if field_of_view_cut else None
    return _render(layout, subject, spacing_array, direction, cut, float(noise_hu), float(blur_mm),
                   float(margin_mm), np.random.default_rng(pixel_seed))


def random_ct_phantom(rng: np.random.Generator, spacing: Sequence[float] | float = (2.0, 2.0, 2.0)) -> CTPhantom:
    """A random training phantom: 5-18 consecutive levels (mostly thoraco-lumbar), random shape and image quality."""
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
    subject = _draw_subject(rng)
    cut = _cut_planes(layout, rng) if rng.random() < 0.8 else None
    return _render(layout, subject, spacing_array, np.eye(3), cut, float(rng.uniform(10.0, 40.0)),
                   float(rng.uniform(0.5, 1.5)), float(rng.uniform(10.0, 35.0)), rng)
