"""Voxels from bone: the CT's bone near the found vertebrae is divided between them by a seeded watershed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spineseg.vertebrae.bone_division import BONE_REACH_MM, DISC_GAP_MM, divide_bone
from spineseg.vertebrae.disc_planes import DiscPlane

SHAPE = (40, 40, 60)  # i, j, k (k towards the head), 1 mm voxels
SPACING = (1.0, 1.0, 1.0)


def hollow_body(hounsfield: np.ndarray, box: tuple[slice, ...], marrow_hu: float) -> None:
    """Paint a vertebral body: a 2 mm cortex of 900 HU around marrow of ``marrow_hu``, in place."""
    solid = np.zeros(hounsfield.shape, bool)
    solid[box] = True
    hounsfield[solid] = 900.0
    hounsfield[ndimage.binary_erosion(solid, iterations=2)] = marrow_hu


def test_two_bodies_with_dark_marrow_are_divided_at_their_disc():
    """Two bodies with dark, osteoporotic marrow (60 HU) and a thin disc (3 mm, 80 HU) between them. The
    network saw each body's cortex only in part, away from the disc; the division fills each body's marrow
    and gives it to its own vertebra, and leaves the disc out (where endplates touch with no disc space left,
    the disc planes are the barrier: see the last test)."""
    hounsfield = np.full(SHAPE, 40.0)
    upper_box = (slice(10, 30), slice(10, 30), slice(33, 50))
    lower_box = (slice(10, 30), slice(10, 30), slice(12, 30))
    hollow_body(hounsfield, upper_box, 60.0)
    hollow_body(hounsfield, lower_box, 60.0)
    hounsfield[10:30, 10:30, 30:33] = 80.0  # the disc
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:30, 10:30, 38:50][hounsfield[10:30, 10:30, 38:50] > 500] = 20
    labels[10:30, 10:30, 12:25][hounsfield[10:30, 10:30, 12:25] > 500] = 21
    probability = np.where(labels > 0, 0.9, 0.0).astype(np.float32)
    divided, _ = divide_bone(labels, probability, hounsfield, SPACING, superior_axis=2)
    upper, lower = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    upper[upper_box], lower[lower_box] = True, True
    assert (divided[upper] == 20).mean() > 0.97
    assert (divided[lower] == 21).mean() > 0.97
    assert not (divided[upper] == 21).any() and not (divided[lower] == 20).any()
    assert not divided[~(upper | lower)].any()  # neither the disc nor the soft tissue around


def test_bone_beyond_the_reach_and_the_canal_stay_out():
    """A rib-like bar that touches a body: only its first ``BONE_REACH_MM`` near the vertebra joins it. A
    ring of bone around soft tissue (an arch around the canal) does not make the canal bone."""
    hounsfield = np.full(SHAPE, 40.0)
    hollow_body(hounsfield, (slice(15, 25), slice(20, 32), slice(20, 40)), 250.0)
    hounsfield[25:40, 24:28, 28:32] = 900.0  # a bar running off to the side, touching the body
    arch = np.zeros(SHAPE, bool)
    arch[12:28, 4:20, 20:40] = True
    canal_region = np.zeros(SHAPE, bool)
    canal_region[16:24, 8:18, 20:40] = True
    hounsfield[arch & ~canal_region] = 700.0
    canal = np.zeros(SHAPE, bool)
    canal[20, 12, 20:40] = True  # the canal's centre line
    labels = np.zeros(SHAPE, np.uint8)
    probability = np.zeros(SHAPE, np.float32)
    labels[15:25, 20:32, 20:40], probability[15:25, 20:32, 20:40] = 22, 0.9
    labels[12:28, 4:20, 20:40][~canal_region[12:28, 4:20, 20:40]] = 22
    probability[labels > 0] = 0.9
    divided, _ = divide_bone(labels, probability, hounsfield, SPACING, superior_axis=2, canal=canal)
    bar = divided[25:40, 24:28, 28:32] == 22
    reach = int(BONE_REACH_MM)
    assert bar[:reach].all() and not bar[reach + 1:].any()
    assert not divided[canal_region].any()


def test_a_rib_seeded_beyond_the_spine_stops_at_its_joint():
    """A rib leans on the body through a joint (cartilage, darker than bone). Seeded where it lies beside the
    spine (``not_vertebra``), it floods back against the vertebra's flood and the two meet at the joint: the
    rib's head stays out, which the reach alone (the test above) would give to the vertebra."""
    hounsfield = np.full(SHAPE, 40.0)
    hollow_body(hounsfield, (slice(10, 25), slice(20, 32), slice(20, 40)), 250.0)
    hounsfield[25:40, 24:28, 28:32] = 700.0  # the rib, off to the side
    hounsfield[25, 24:28, 28:32] = 160.0  # its joint with the body: bone-bright only by partial volume
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:25, 20:32, 20:40] = 22
    probability = np.where(labels > 0, 0.9, 0.0).astype(np.float32)
    rib_seed = np.zeros(SHAPE, bool)
    rib_seed[36:40, 24:28, 28:32] = True
    divided, _ = divide_bone(labels, probability, hounsfield, SPACING, superior_axis=2, not_vertebra=rib_seed)
    assert not divided[26:40, 24:28, 28:32].any()
    assert (divided[10:25, 20:32, 20:40] == 22).all()
    reached, _ = divide_bone(labels, probability, hounsfield, SPACING, superior_axis=2)
    assert (reached[26:30, 24:28, 28:32] == 22).all()


def test_dark_marrow_capped_by_endplates_is_filled_but_a_disc_inside_an_endplate_rim_is_not():
    """Dark (20 HU) marrow that the cortex encloses in every slice and the endplates cap is the vertebra's,
    though the network saw only its cortex. Below it, a disc (80 HU) whose top slice an endplate's rim
    encloses opens into the disc space below that slice: it is not marrow."""
    hounsfield = np.full(SHAPE, 40.0)
    hollow_body(hounsfield, (slice(10, 30), slice(10, 30), slice(30, 45)), 20.0)
    hounsfield[10:30, 10:30, 22:30] = 80.0  # the disc below the body
    rim = np.zeros(SHAPE, bool)
    rim[10:30, 10:30, 29] = True
    rim[12:28, 12:28, 29] = False
    hounsfield[rim] = 900.0  # the endplate's rim around the disc's top slice
    labels = np.zeros(SHAPE, np.uint8)
    labels[hounsfield >= 800] = 19  # the network outlined the cortex and the rim only
    probability = np.where(labels > 0, 0.9, 0.0).astype(np.float32)
    divided, _ = divide_bone(labels, probability, hounsfield, SPACING, superior_axis=2)
    assert (divided[12:28, 12:28, 32:43] == 19).all()  # the marrow, filled
    assert not divided[12:28, 12:28, 22:30].any()  # the disc, even its slice inside the rim, stays out


def open_body(marrow_hu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A body (2 mm cortex of 600 HU around ``marrow_hu``) in front of a canal line, its posterior wall open
    towards the canal as a thin cortex on a coarse scan leaves it; the network painted its cortex only.
    Returns the CT, the labels, their probability and the body's voxels (RAS = voxel indices in mm)."""
    hounsfield = np.full(SHAPE, 40.0)
    body = np.zeros(SHAPE, bool)
    body[10:30, 16:34, 15:45] = True
    hounsfield[body] = 600.0
    hounsfield[ndimage.binary_erosion(body, iterations=2)] = marrow_hu
    hounsfield[16:24, 16:18, 15:45] = marrow_hu  # the gap in the posterior wall
    labels = np.where(hounsfield >= 500.0, 20, 0).astype(np.uint8)
    probability = np.where(labels > 0, 0.9, 0.0).astype(np.float32)
    return hounsfield, labels, probability, body


CANAL_LINE = np.array([[20.0, 8.0, k] for k in (60.0, 0.0)])  # head to foot, 8 mm behind the body


def test_dim_marrow_behind_an_open_wall_joins_its_body():
    """Marrow of 120 HU (a 3 mm scan of an older spine) whose ring of cortex is open towards the canal: no
    slice encloses it, so only its reading as dim marrow inside the body's outline gives it to the vertebra."""
    hounsfield, labels, probability, body = open_body(120.0)
    divided, _ = divide_bone(labels, probability, hounsfield, SPACING, 2, canal_line=CANAL_LINE, ras_of=np.eye(4))
    assert (divided[body] == 20).mean() > 0.95
    assert not divided[~body].any()
    without_line, _ = divide_bone(labels, probability, hounsfield, SPACING, 2)
    assert (without_line[body] == 20).mean() < 0.5


def test_the_blur_around_a_body_with_bright_marrow_stays_out():
    """A body with bright marrow (250 HU) and a ring of blur (120 HU) around it: the dim threshold never
    applies, so the vertebra ends at its cortex."""
    hounsfield, labels, probability, body = open_body(250.0)
    blur = ndimage.binary_dilation(body) & ~body
    hounsfield[blur] = 120.0
    divided, _ = divide_bone(labels, probability, hounsfield, SPACING, 2, canal_line=CANAL_LINE, ras_of=np.eye(4))
    assert (divided[body] == 20).mean() > 0.95
    assert not divided[blur].any()


def bodies_meeting_at_a_plane(upper_painted_from: int, lower_painted_to: int):
    """Two bodies (700 HU cortex, 250 HU inside) meeting at the plane z = 30.5, the network's paint on the upper one
    from slice ``upper_painted_from`` up and on the lower one up to ``lower_painted_to``; the slices at the plane
    are the caller's to set."""
    hounsfield = np.full(SHAPE, 40.0)
    upper, lower = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    upper[10:30, 16:34, 31:52], lower[10:30, 16:34, 10:31] = True, True
    for body in (upper, lower):
        hounsfield[body] = 700.0
        hounsfield[ndimage.binary_erosion(body, iterations=2)] = 250.0
    labels = np.zeros(SHAPE, np.uint8)
    labels[upper & (np.indices(SHAPE)[2] >= upper_painted_from)] = 20
    labels[lower & (np.indices(SHAPE)[2] <= lower_painted_to)] = 21
    probability = np.where(labels > 0, 0.9, 0.0).astype(np.float32)
    plane = DiscPlane(centre=np.array([20.0, 25.0, 30.5]), normal=np.array([0.0, 0.0, -1.0]))
    return hounsfield, upper, lower, labels, probability, plane


def test_a_disc_plane_bars_the_division_where_two_endplates_touch():
    """Two bodies whose endplates touch with no disc space left (one bright slab of bone from one body into the
    next); the network painted the upper body down to 3.5 mm above the junction and the lower body's bottom
    only. Without a barrier the two floods meet half-way, inside the lower body; with the disc plane between
    them (:mod:`.disc_planes`), each body is its own vertebra on its own side of the plane, the bright
    endplates in the plane's middle included, and the flood crosses nowhere."""
    hounsfield, upper, lower, labels, probability, plane = bodies_meeting_at_a_plane(34, 20)
    hounsfield[10:30, 16:34, 29:33] = 700.0  # the two endplates, fused
    divided, _ = divide_bone(labels, probability, hounsfield, SPACING, 2, canal_line=CANAL_LINE, ras_of=np.eye(4),
                             disc_planes=[plane])
    height = np.indices(SHAPE)[2]
    assert not (divided[height < 30.5] == 20).any() and not (divided[height > 30.5] == 21).any()
    middle = np.abs(height - 30.5) <= DISC_GAP_MM
    assert (divided[upper & middle] == 20).all() and (divided[lower & middle] == 21).all()
    away = np.abs(height - 30.5) > DISC_GAP_MM + 1.0
    assert (divided[upper & away] == 20).mean() > 0.97 and (divided[lower & away] == 21).mean() > 0.97
    unbarred, _ = divide_bone(labels, probability, hounsfield, SPACING, 2, canal_line=CANAL_LINE, ras_of=np.eye(4))
    assert (unbarred[lower] == 20).any()


def test_the_disc_in_a_plane_s_middle_stays_out_and_its_endplates_join_their_bodies():
    """A thin disc (2 mm, 90 HU) between two bright endplates, all inside the plane's middle (4 mm): after the
    flood, which the middle bars, each endplate joins the body on its side of the plane and the disc stays out."""
    hounsfield, _, _, labels, probability, plane = bodies_meeting_at_a_plane(34, 26)
    hounsfield[10:30, 16:34, 29] = hounsfield[10:30, 16:34, 32] = 700.0  # the endplates
    hounsfield[10:30, 16:34, 30:32] = 90.0  # the disc
    divided, _ = divide_bone(labels, probability, hounsfield, SPACING, 2, canal_line=CANAL_LINE, ras_of=np.eye(4),
                             disc_planes=[plane])
    assert (divided[10:30, 16:34, 32] == 20).all() and (divided[10:30, 16:34, 29] == 21).all()
    assert not divided[10:30, 16:34, 30:32].any()
