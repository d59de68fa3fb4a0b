"""The body of the CT phantom painted on the scan grid: outline, fat, muscles, lungs, vessels, organs, gas
and the table slice by slice along the superior axis; discs and the spinal canal in their own local frames.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..anatomy import STANDARD_LEVELS, level_to_position
from .ct_bones import arch_geometry, superellipse_rho
from .ct_render import Canvas
from .ct_tissue import TISSUE_HU, Subject, Tissue
from .layout import PlacedVertebra, SpineLayout

__all__ = ["spine_axis_tables", "table_height", "paint_body", "paint_discs", "paint_canal"]

_F = np.float32

T = Tissue
_HU_OF_TISSUE = np.zeros(len(Tissue), dtype=np.float32)
for _tissue, _hu in TISSUE_HU.items():
    _HU_OF_TISSUE[_tissue] = _hu


# ---------------------------------------------------------------- the body

# Per-level tables (index 0 = C1 ... 23 = L5, 24 = sacrum) for the body outline.
_TABLE_INDEX = [0, 6, 7, 9, 14, 19, 22, 24, 26]
_BODY_HALF_WIDTH = [58.0, 68.0, 150.0, 165.0, 160.0, 158.0, 160.0, 175.0, 180.0]
_BODY_HALF_DEPTH = [55.0, 60.0, 95.0, 110.0, 118.0, 112.0, 108.0, 105.0, 100.0]
_BACK_DISTANCE = [58.0, 70.0, 80.0, 75.0, 72.0, 82.0, 92.0, 80.0, 60.0]


def _back_distance_mm(level_index: float, subject: Subject) -> float:
    """Distance from the spine's centre line to the skin of the back at a (0-based, continuous) level index."""
    return np.interp(level_index, _TABLE_INDEX, _BACK_DISTANCE) * (0.5 + 0.5 * subject.body_scale)


def spine_axis_tables(layout: SpineLayout) -> tuple[Callable[[float], float], Callable[[float], tuple[float, float]]]:
    """Functions of RAS z: continuous level index and the spine centre (x, y)."""
    z = np.array([v.centre[2] for v in layout.vertebrae])
    index = np.array([level_to_position(v.level) - 1 for v in layout.vertebrae], dtype=float)
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


def table_height(layout: SpineLayout, subject: Subject) -> float:
    """RAS y of the table top: just behind the skin of the back where it lies furthest back."""
    backs = [v.centre[1] - _back_distance_mm(level_to_position(v.level) - 1, subject) for v in layout.vertebrae]
    return float(min(backs)) - 1.0


def paint_body(canvas: Canvas, layout: SpineLayout, subject: Subject, table_y: float) -> None:
    """Body outline, fat, muscles, lungs, vessels, organs, gas and the table, slice by slice along S."""
    affine = canvas.affine
    s_axis = int(np.argmax(np.abs(affine[2, :3])))
    plane = [n for n in range(3) if n != s_axis]
    n0, n1 = canvas.shape[plane[0]], canvas.shape[plane[1]]
    i0 = np.arange(n0, dtype=np.float32)[:, None]
    i1 = np.arange(n1, dtype=np.float32)[None, :]
    x2 = _F(affine[0, 3]) + i0 * _F(affine[0, plane[0]]) + i1 * _F(affine[0, plane[1]])
    y2 = _F(affine[1, 3]) + i0 * _F(affine[1, plane[0]]) + i1 * _F(affine[1, plane[1]])
    level_at, centre_at = spine_axis_tables(layout)
    sizes = {v.level: v.size for v in layout.vertebrae}
    first_size = layout.vertebrae[0].size

    for k in range(canvas.shape[s_axis]):
        z = affine[2, 3] + k * affine[2, s_axis]
        lc = level_at(z)
        xc, yc = centre_at(z)
        dx, dy = x2 - _F(xc), y2 - _F(yc)
        a = np.interp(lc, _TABLE_INDEX, _BODY_HALF_WIDTH) * subject.body_scale
        bb = np.interp(lc, _TABLE_INDEX, _BODY_HALF_DEPTH) * subject.body_scale
        back = _back_distance_mm(lc, subject)
        cy = -back + bb
        ex, ey = dx / _F(a), (dy - _F(cy)) / _F(bb)
        r_body = np.sqrt(ex * ex + ey * ey)
        fat = subject.fat_mm * (0.5 if lc < 7 else 1.0)
        inner = 1.0 - fat / min(a, bb)
        sl = np.where(r_body <= 1.0, T.FAT, T.AIR)
        sl = np.where(r_body <= inner, T.ORGAN, sl)
        level_ref = STANDARD_LEVELS[int(np.clip(round(lc), 0, 24))]
        size = sizes.get(level_ref, first_size)
        half_w, half_d = size.body_width / 2, size.body_depth / 2
        # Paraspinal muscles behind the arches; fat between them and the skin.
        para = ((np.abs(dx) - _F(half_w * 0.9 + 12.0)) / _F(half_w * 0.9 + 18.0)) ** 2 + ((dy + _F(half_d + 30.0)) / _F(28.0 + 0.2 * half_d)) ** 2
        sl = np.where((para <= 1.0) & (r_body <= inner + 0.02), T.PARASPINAL_MUSCLE, sl)
        if 7.5 <= lc <= 20.5:  # chest: lungs left and right, anterior to the ribs
            cage_a = np.interp(lc - 7.0, [0, 2, 6, 9, 11, 13], [62.0, 105.0, 135.0, 135.0, 120.0, 110.0]) - 10.0
            cage_b = np.interp(lc - 7.0, [0, 2, 6, 9, 11, 13], [45.0, 75.0, 100.0, 105.0, 95.0, 90.0]) - 8.0
            v0 = -half_d - size.pedicle_length - 10.0 + cage_b + 6.0
            cage = (dx / _F(cage_a)) ** 2 + ((dy - _F(v0)) / _F(cage_b)) ** 2
            front = np.interp(lc, [7.5, 15.0, 18.0, 19.5, 20.5], [200.0, 200.0, 20.0, -10.0, -25.0])
            mediastinum = np.abs(dx + _F(8.0)) < _F(half_w + 12.0) + np.maximum(dy - _F(half_d), 0) * _F(0.45)
            lung = (cage <= 1.0) & ~mediastinum & (dy < _F(front)) & (np.abs(dx) > _F(half_w + 10.0))
            sl = np.where(lung, T.LUNG, sl)
        if 7.0 <= lc <= 22.5:  # descending aorta, left-anterior of the bodies
            ax, ay = -0.55 * half_w - 4.0, half_d + 13.0
            aorta = (dx - _F(ax)) ** 2 + (dy - _F(ay)) ** 2 <= _F(12.0 ** 2)
            sl = np.where(aorta, T.AORTA_ENHANCED if subject.iv_contrast else T.BLOOD, sl)
        if lc <= 10.0:  # trachea (air) in front of the cervical and upper thoracic spine
            tr = (dx / _F(9.0)) ** 2 + ((dy - _F(half_d + 20.0)) / _F(8.0)) ** 2 <= 1.0
            sl = np.where(tr, T.AIR, sl)
        if lc >= 18.5:  # abdomen: fatty retroperitoneum and mesentery around the organs
            fatty = (r_body <= inner) & ((dx / _F(135.0)) ** 2 + ((dy - _F(half_d + 30.0)) / _F(half_d + 45.0)) ** 2 <= 1.0)
            sl = np.where(fatty, T.MESENTERIC_FAT if lc > 19.5 else T.UPPER_ABDOMEN, sl)
            bowel = fatty & (dy > _F(half_d + 35.0)) & (np.cos(dx * _F(0.09)) * np.cos(dy * _F(0.08) + _F(lc)) > _F(-0.2))
            sl = np.where(bowel, T.BOWEL, sl)
        if 18.5 <= lc <= 23.5:  # psoas muscles and kidneys
            grow = np.clip((lc - 18.5) / 5.0, 0.0, 1.0)
            psoas = ((np.abs(dx) - _F(half_w + 8.0 + 10.0 * grow)) / _F(10.0 + 12.0 * grow)) ** 2 + (dy / _F(12.0 + 6.0 * grow)) ** 2
            sl = np.where(psoas <= 1.0, T.PSOAS, sl)
            if lc <= 22.0:
                kid = ((np.abs(dx) - _F(75.0)) / _F(28.0)) ** 2 + ((dy - _F(-5.0)) / _F(24.0)) ** 2
                sl = np.where(kid <= 1.0, T.KIDNEY_ENHANCED if subject.iv_contrast else T.KIDNEY, sl)
        if 16.5 <= lc <= 20.5:  # liver on the right
            extent = np.sqrt(max(1.0 - ((lc - 18.5) / 2.2) ** 2, 0.0))
            liver = ((dx - _F(95.0)) ** 2 + (dy - _F(70.0)) ** 2 <= _F((95.0 * extent) ** 2)) & (r_body <= inner)
            sl = np.where(liver & (sl != T.LUNG), T.LIVER, sl)
        if lc >= 20.0:  # bowel with gas pockets in front
            for g_level, g_x, g_y, g_r in subject.gas:
                dz = (lc - g_level) * 30.0
                if abs(dz) < g_r:
                    rr = g_r * g_r - dz * dz
                    pocket = ((dx - _F(g_x)) ** 2 + (dy - _F(half_d + g_y)) ** 2 <= _F(rr)) & (r_body <= inner)
                    sl = np.where(pocket, T.BOWEL_GAS, sl)
        if subject.table:
            plate = (y2 < _F(table_y)) & (y2 > _F(table_y - 14.0))
            skin = plate & ((y2 > _F(table_y - 2.5)) | (y2 < _F(table_y - 11.5)))
            sl = np.where(plate, np.where(skin, T.TABLE_SHELL, T.TABLE_CORE), sl)
        index = [slice(None)] * 3
        index[s_axis] = k
        canvas.tissue[tuple(index)] = sl
        canvas.hu[tuple(index)] = _HU_OF_TISSUE[sl]


def paint_discs(canvas: Canvas, layout: SpineLayout) -> None:
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
        rho = superellipse_rho(u, v, _F(disc.width / 2 * 0.97), _F(disc.depth / 2 * 0.97), 2.6)
        del u, v, w
        pts_up = canvas.local(box, upper.centre, upper.frame)[2]
        inside = (rho <= 1.0) & (pts_up <= _F(-upper.size.body_height / 2 + 3.0))
        del pts_up
        pts_lo = canvas.local(box, lower.centre, lower.frame)[2]
        inside &= pts_lo >= _F(lower.size.body_height / 2 - 3.0)
        tissue = np.where(rho < 0.6, T.NUCLEUS, T.ANNULUS).astype(np.uint8)
        canvas.tissue[box][inside] = tissue[inside]
        canvas.hu[box][inside] = _HU_OF_TISSUE[tissue[inside]]


def paint_canal(canvas: Canvas, vertebra: PlacedVertebra, disc_below: float) -> None:
    """The spinal canal from this vertebra down to the next: cord (down to L1) in CSF."""
    size = vertebra.size
    b, canal_v, *_ = arch_geometry(size)
    half = size.body_height / 2 + disc_below + 2.0
    lo = (-size.canal_width / 2 - 2, canal_v - size.canal_depth / 2 - 8, -half)
    hi = (size.canal_width / 2 + 2, canal_v + size.canal_depth / 2 + 2, size.body_height / 2 + 2)
    box = canvas.box(vertebra.centre, vertebra.frame, lo, hi)
    if box is None:
        return
    u, v, w = canvas.local(box, vertebra.centre, vertebra.frame)
    ring_v = v - _F(0.3) * np.minimum(w, 0)
    rho = np.sqrt((u / _F(size.canal_width / 2)) ** 2 + ((ring_v - _F(canal_v)) / _F(size.canal_depth / 2)) ** 2)
    tissue = np.where(rho < 0.45, T.CORD if vertebra.level <= 20 else T.CSF, T.CSF).astype(np.uint8)
    inside = rho <= 1.0
    canvas.tissue[box][inside] = tissue[inside]
    canvas.hu[box][inside] = _HU_OF_TISSUE[tissue[inside]]
