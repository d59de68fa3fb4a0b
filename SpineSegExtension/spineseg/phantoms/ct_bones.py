"""Bone shapes of the CT phantom: approximate signed distances (mm, negative inside).

Each vertebra part is an analytic shape in its vertebra's local frame
(u lateral, v anterior, w axial, see :class:`~.layout.PlacedVertebra`),
evaluated in float32 on the voxel centres of a box. The renderer turns the
distance into partial-volume fractions of cortex and marrow.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..anatomy import SACRUM, LevelSize
from .layout import PlacedVertebra

__all__ = [
    "SACRUM_LENGTH_MM", "sd_ellipsoid", "sd_capsule", "sd_rounded_prism", "superellipse_rho", "body_sd",
    "arch_geometry", "arch_sd", "atlas_sd", "dens_sd", "sacrum_sd", "ilium_sd", "vertebra_extent",
]

# Length of the sacrum along its axis, S1 top plate to the coccyx (adult sacra are about 100 mm long).
SACRUM_LENGTH_MM = 100.0
_F = np.float32
Array = np.ndarray


def sd_ellipsoid(u: Array, v: Array, w: Array, centre: Sequence[float], radii: Sequence[float]) -> Array:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid in local coordinates."""
    ru, rv, rw = radii
    rho = np.sqrt(((u - centre[0]) / ru) ** 2 + ((v - centre[1]) / rv) ** 2 + ((w - centre[2]) / rw) ** 2)
    return (rho - 1.0) * _F((ru * rv * rw) ** (1.0 / 3.0))


def sd_capsule(u: Array, v: Array, w: Array, a: Sequence[float], b: Sequence[float], r0: float, r1: float,
               squash: float = 1.0) -> Array:
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


def sd_rounded_prism(sd_section: Array, sd_axial: Array, rounding: float) -> Array:
    """Intersection of a cross-section and an axial slab with rounded edges."""
    r = _F(rounding)
    a, b = sd_section + r, sd_axial + r
    outside = np.sqrt(np.maximum(a, 0) ** 2 + np.maximum(b, 0) ** 2)
    return outside + np.minimum(np.maximum(a, b), 0) - r


def superellipse_rho(x: Array, y: Array, a: Array | float, b: Array | float, p: float) -> Array:
    """Superellipse 'radius' of (x, y): 1 on the curve |x/a|^p + |y/b|^p = 1."""
    return (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)


def body_sd(u: Array, v: Array, w: Array, size: LevelSize, waist: float = 0.07, dent_frac: float = 0.12,
            concavity: float = 1.5) -> Array:
    """Vertebral body: superelliptic cylinder, concave waist, kidney-shaped back wall, concave endplates."""
    half_h = size.body_height / 2
    a, b = size.body_width / 2, size.body_depth / 2
    s = np.clip(w / _F(half_h), -1.0, 1.0)
    squeeze = 1.0 - _F(waist) * (1.0 - s * s)
    dent = _F(dent_frac * size.body_depth) * np.exp(-((u / _F(0.38 * a)) ** 2)) * np.clip(-v / _F(b), 0.0, 1.0) ** 2
    rho = superellipse_rho(u, v - dent, a * squeeze, b * squeeze, 2.6)
    sd_section = (rho - 1.0) * _F(np.sqrt(a * b)) * squeeze
    cup = _F(concavity) * np.clip(1.0 - rho * rho, 0.0, 1.0)
    sd_axial = np.abs(w) - (_F(half_h) - cup)
    return sd_rounded_prism(sd_section, sd_axial, 2.0)


def arch_geometry(size: LevelSize) -> tuple[float, ...]:
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


def arch_sd(u: Array, v: Array, w: Array, vertebra: PlacedVertebra) -> Array:
    """Pedicles, laminae, spinous and transverse processes, articular processes."""
    size, level = vertebra.size, vertebra.level
    b, canal_v, ped_u, ped_ru, ped_rw, ped_end, arch_w, lam = arch_geometry(size)
    h = size.body_height
    cervical, thoracic = level <= 7, 8 <= level <= 19
    au = np.abs(u)  # both sides at once: mirror symmetric parts

    # Pedicles: elliptic cylinders from the back of the body to the arch.
    mid_v = 0.5 * (-b + 3.0 + ped_end)
    half_len = 0.5 * (-b + 3.0 - ped_end)
    rho = np.sqrt(((au - _F(ped_u)) / _F(ped_ru)) ** 2 + ((w - _F(arch_w + 0.1 * h)) / _F(ped_rw)) ** 2)
    sd = sd_rounded_prism((rho - 1.0) * _F(np.sqrt(ped_ru * ped_rw)), np.abs(v - _F(mid_v)) - _F(half_len), 1.5)

    # Laminae: the posterior half of a ring around the canal, shingled (lower part more posterior).
    ring_v = v - _F(canal_v) - _F(0.3) * (w - _F(arch_w))
    cw, cd = size.canal_width / 2, size.canal_depth / 2
    outer = (np.sqrt((u / _F(cw + lam)) ** 2 + (ring_v / _F(cd + lam)) ** 2) - 1.0) * _F(np.sqrt((cw + lam) * (cd + lam)))
    inner = (np.sqrt((u / _F(cw)) ** 2 + (ring_v / _F(cd)) ** 2) - 1.0) * _F(np.sqrt(cw * cd))
    ring = np.maximum(np.maximum(outer, -inner), ring_v - _F(1.0))
    sd = np.minimum(sd, sd_rounded_prism(ring, np.abs(w - _F(arch_w)) - _F(0.36 * h), 1.5))

    # Spinous process: from the back of the arch, posterior and dropping.
    start = np.array([0.0, canal_v - cd - 0.5 * lam, arch_w])
    tip = start + np.array([0.0, -size.spinous_length, -size.spinous_drop])
    r_sp = float(np.clip(0.33 * h, 3.5, 10.0))
    squash = float(np.clip(r_sp / 4.0, 1.0, 2.6))
    sd = np.minimum(sd, sd_capsule(u, v, w, start, tip, r_sp, 0.75 * r_sp, squash))

    # Transverse processes.
    half_span = size.transverse_span / 2
    r_tp = float(np.clip(0.2 * h, 3.0, 6.0))
    if cervical:
        root_a = np.array([size.body_width / 2 - 1.0, 0.1 * b, 0.0])
        root_p = np.array([ped_u, ped_end + 1.0, arch_w])
        tip_c = np.array([half_span, -0.2 * b, -1.0])
        tp = np.minimum(sd_capsule(au, v, w, root_a, tip_c, 3.5, 3.5),
                        sd_capsule(au, v, w, root_p, tip_c, 3.5, 4.0))
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
        tp = sd_capsule(au, v, w, root, tip_p, r_tp, r_tip, 1.0)
    sd = np.minimum(sd, tp)

    # Articular processes (facets): superior ones up, inferior ones down.
    r_f = float(np.clip(0.27 * h, 3.0, 7.5))
    sup = sd_ellipsoid(au, v, w, (ped_u + 2.0, ped_end - 1.0, arch_w + 0.5 * h), (r_f, r_f + 1.0, 0.3 * h + 1.0))
    inf = sd_ellipsoid(au, v, w, (ped_u - 1.0, ped_end - 5.0, arch_w - 0.55 * h), (r_f, r_f + 1.0, 0.3 * h + 1.0))
    return np.minimum(sd, np.minimum(sup, inf))


def atlas_sd(u: Array, v: Array, w: Array, size: LevelSize) -> Array:
    """C1: anterior arch, lateral masses and posterior arch around a large canal; no body."""
    front = 10.0
    back = -(size.canal_depth + 5.0)
    v0, rv = 0.5 * (front + back), 0.5 * (front - back)
    ru = size.canal_width / 2 + 4.0
    rho = np.sqrt((u / _F(ru)) ** 2 + ((v - _F(v0)) / _F(rv)) ** 2)
    tube = np.sqrt(((rho - 1.0) * _F(np.sqrt(ru * rv))) ** 2 + (w / _F(1.4)) ** 2) - _F(3.5)
    au = np.abs(u)
    masses = sd_ellipsoid(au, v, w, (ru - 2.0, v0 + 3.0, 0.0), (7.0, 9.0, 9.0))
    tip = np.array([size.transverse_span / 2, v0 + 1.0, 0.0])
    tp = sd_capsule(au, v, w, np.array([ru + 2.0, v0 + 3.0, 0.0]), tip, 5.5, 4.5)
    hole = np.sqrt((au - _F(ru + 7.0)) ** 2 + (v - _F(v0 + 3.0)) ** 2) - _F(2.3)
    tp = np.maximum(tp, -hole)
    tubercle = sd_ellipsoid(u, v, w, (0.0, back - 2.0, 0.0), (4.0, 4.0, 5.0))
    return np.minimum(np.minimum(tube, masses), np.minimum(tp, tubercle))


def dens_sd(u: Array, v: Array, w: Array, size: LevelSize) -> Array:
    """C2's dens: a peg rising from the top of the body into C1's ring."""
    top = size.body_height / 2
    return sd_capsule(u, v, w, np.array([0.0, 0.5, top - 2.0]), np.array([0.0, 0.0, top + 14.0]), 5.5, 4.5)


def sacrum_sd(u: Array, v: Array, w: Array, size: LevelSize) -> Array:
    """Sacrum: fused, tapering bodies with wide alae, canal and foramina, concave in front."""
    top = size.body_height / 2
    t = np.clip((_F(top) - w) / _F(SACRUM_LENGTH_MM), 0.0, 1.0)
    bend = _F(-9.0) * 4.0 * t * (1.0 - t)  # posterior bulge of the fused column
    vv = v - bend
    a = _F(size.body_width / 2) * (1.0 - 0.72 * t)
    b = _F(size.body_depth / 2) * (1.0 - 0.55 * t)
    rho = superellipse_rho(u, vv, a, b, 2.4)
    section = (rho - 1.0) * np.sqrt(a * b)
    axial = np.maximum(w - _F(top), _F(top - SACRUM_LENGTH_MM) - w)
    sd = sd_rounded_prism(section, axial, 2.0)
    # Alae and lateral masses behind and beside the bodies.
    la = _F(size.transverse_span / 2) * (1.0 - t) ** 1.1 + _F(8.0)
    lb = _F(0.45 * size.body_depth) * (1.0 - 0.6 * t) + _F(5.0)
    lv = vv + b * 0.55
    lrho = np.sqrt((u / la) ** 2 + (lv / lb) ** 2)
    lateral = sd_rounded_prism((lrho - 1.0) * np.sqrt(la * lb),
                               np.maximum(w - _F(top - 4.0), _F(top - 0.85 * SACRUM_LENGTH_MM) - w), 4.0)
    sd = np.minimum(sd, lateral)
    # Dorsal plate with the median crest.
    cw = _F(size.canal_width / 2) * (1.0 - 0.6 * t)
    cd = _F(size.canal_depth / 2) * (1.0 - 0.5 * t)
    canal_v = -b - cd + 1.0
    dorsal = sd_rounded_prism((np.sqrt((u / (cw + 5.0)) ** 2 + ((vv - canal_v) / (cd + 5.0)) ** 2) - 1.0) * (cw + cd + 10.0) / 2,
                              np.maximum(w - _F(top - 2.0), _F(top - 0.8 * SACRUM_LENGTH_MM) - w), 2.0)
    crest = sd_capsule(u, vv, w, np.array([0.0, -size.body_depth / 2 - size.canal_depth - 5.0, top - 8.0]),
                       np.array([0.0, -size.body_depth / 2 - size.canal_depth + 2.0, top - 70.0]), 3.5, 2.5, 1.6)
    sd = np.minimum(sd, np.minimum(dorsal, crest))
    # Sacral canal and four pairs of foramina.
    canal = (np.sqrt((u / cw) ** 2 + ((vv - canal_v) / cd) ** 2) - 1.0) * np.sqrt(cw * cd)
    canal = np.maximum(canal, w - _F(top + 1.0))
    sd = np.maximum(sd, -canal)
    au = np.abs(u)
    for k, tk in enumerate((0.22, 0.42, 0.6, 0.76)):
        centre_w = top - tk * SACRUM_LENGTH_MM
        fu = size.body_width / 2 * (1.0 - 0.72 * tk) + 5.0
        radius = 4.5 - 0.6 * k
        hole = np.sqrt((au - _F(fu)) ** 2 + (w - _F(centre_w)) ** 2) - _F(radius)
        sd = np.maximum(sd, -hole)
    return sd


def ilium_sd(u: Array, v: Array, w: Array, vertebra: PlacedVertebra) -> Array:
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


def vertebra_extent(vertebra: PlacedVertebra) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Local (lateral, anterior, axial) box around everything a vertebra paints, processes and ilium included."""
    s = vertebra.size
    if vertebra.level == SACRUM:
        reach = s.transverse_span / 2 + 75.0
        return (-reach, -s.body_depth / 2 - s.canal_depth - 25.0, s.body_height / 2 - SACRUM_LENGTH_MM - 3.0), (
            reach, s.body_depth / 2 + 45.0, s.body_height / 2 + 70.0)
    lateral = max(s.transverse_span / 2, s.body_width / 2) + 8.0
    back = s.body_depth / 2 + s.canal_depth + 6.0 + s.spinous_length + 10.0
    up = s.body_height / 2 + 6.0 + (18.0 if vertebra.level == 2 else 0.0) + 0.5 * s.body_height
    down = s.body_height / 2 + s.spinous_drop + 0.6 * s.body_height + 10.0
    return (-lateral, -back, -down), (lateral, s.body_depth / 2 + 12.0, up)
