"""Real vertebra shapes for the CT and MRI phantoms, taken from VerSe label maps.

:class:`RealShapeLibrary` turns each vertebra of a hand-corrected label map
into a signed distance field (mm, negative inside) in the vertebra's own frame
(lateral towards the patient's right, anterior, axial towards the head) with
its origin at the centre of the vertebral body, the same frame as
:class:`~.layout.PlacedVertebra`. :meth:`RealShapeLibrary.signed_distance`
samples that field on a phantom vertebra's local coordinates, scaled so that
the real body matches the phantom's body size, with a small random extra scale
and tilt, so the renderer can paint it instead of the analytic
``body_sd``/``arch_sd`` shapes.

Several label maps make one library (:func:`load_shape_folders`): a level held
by more than one of them takes one of its real shapes at random in each phantom.

The data are not part of the repository: the VerSe sample lives in
``../shared/data/real/ct_verse_sample`` beside the checkout, more VerSe label
maps (C1-T5, C1-T4, L1-L5) in ``../shared/data/train/verse_shapes`` (all CC BY-SA 4.0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..io import read_volume
from ..volume import Volume, VolumeKind, orientation_code
from .layout import PlacedVertebra

__all__ = [
    "FAR_MM",
    "RealShape", "RealShapeLibrary", "load_sample_folder", "load_shape_folders",
    "REAL_SHAPE_RANGE", "REAL_SHAPE_PROBABILITY", "real_stand_ins",
]

# The VerSe sample beside the checkout: <checkout>/../shared/data/real/ct_verse_sample.

# Signed distance (mm) returned outside a level's cropped field: far outside any bone.
FAR_MM = 1000.0
# Margin (mm) kept around each vertebra's bounding box in its cropped field.
_MARGIN_MM = 12.0
# Half-width (mm) of the mid-sagittal column whose profile finds the gap between body and canal.
_COLUMN_MM = 6.0
_F = np.float32

# Levels that may take a real shape (T1-L5; the cervical bodies' width is measured with the transverse
# processes, which would squeeze them when scaled), the farthest a stand-in may be from the level it paints
# (in levels), and the share of training phantoms that take real shapes.
REAL_SHAPE_RANGE = range(8, 25)
STAND_IN_REACH = 5
REAL_SHAPE_PROBABILITY = 0.6
# Wedge-shaped by a compression fracture (the VerSe sample's L1): painted as itself, never for other levels.
_FRACTURED = {("sub-verse004", 20)}


def real_stand_ins(levels: Sequence[int], library: RealShapeLibrary) -> dict[int, int]:
    """For each level in ``REAL_SHAPE_RANGE``, the nearest level the library holds (levels held only as a
    fractured vertebra excluded), when it lies within ``STAND_IN_REACH`` levels."""
    held = [level for level in library.levels if library.choices(level)]
    stand_ins = {}
    for level in levels:
        if level in REAL_SHAPE_RANGE and held:
            nearest = min(held, key=lambda h: (abs(h - level), h))
            if abs(nearest - level) <= STAND_IN_REACH:
                stand_ins[level] = nearest
    return stand_ins


@dataclass(frozen=True)
class RealShape:
    """One real vertebra: its cropped signed distance field and where its body sits.

    ``field`` is float32 mm on the label map's grid (cropped); ``ijk_from_ras``
    maps RAS mm to voxel indices of ``field``. ``frame`` columns are the
    lateral, anterior and axial unit vectors in RAS; ``body_centre`` is RAS mm.
    ``body_size`` is (height, width, depth) in mm, like :class:`~spineseg.anatomy.LevelSize`.
    """

    level: int
    field: np.ndarray
    ijk_from_ras: np.ndarray
    frame: np.ndarray
    body_centre: np.ndarray
    body_size: tuple[float, float, float]
    volume_mm3: float
    fractured: bool = False  # a compressed body: not drawn for other levels

    def ijk_from_local(self) -> np.ndarray:
        """3 x 4 matrix from local (lateral, anterior, axial) mm about the body centre to ``field`` indices."""
        linear = self.ijk_from_ras[:3, :3] @ self.frame
        offset = self.ijk_from_ras[:3, :3] @ self.body_centre + self.ijk_from_ras[:3, 3]
        return np.concatenate([linear, offset[:, None]], axis=1)


def _read_centroids(path: Path, volume: Volume) -> dict[int, np.ndarray]:
    """VerSe centroid file (voxel coordinates of the label map's grid) to RAS mm per level."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read VerSe centroids from {path}: {error}") from None
    centroids = {}
    for entry in entries:
        if "direction" in entry:
            direction = "".join(entry["direction"])
            if direction != orientation_code(volume.direction):
                raise ValueError(f"{path} gives centroids on a {direction} grid, but the label map is "
                                 f"{orientation_code(volume.direction)}; pass a matching pair")
        elif "label" in entry:
            ijk = np.array([entry["X"], entry["Y"], entry["Z"]], dtype=float)
            centroids[int(entry["label"])] = volume.ijk_to_ras(ijk)[0]
    return centroids


def _axial_direction(level: int, centroids: dict[int, np.ndarray], scan_superior: np.ndarray) -> np.ndarray:
    """Unit vector towards the head, from the neighbours' centroids (one neighbour at the ends)."""
    above, below = centroids.get(level - 1), centroids.get(level + 1)
    here = centroids[level]
    if above is not None and below is not None:
        axial = above - below
    elif above is not None:
        axial = above - here
    elif below is not None:
        axial = here - below
    else:
        axial = scan_superior
    axial = np.asarray(axial, dtype=float)
    if np.dot(axial, scan_superior) < 0:  # the neighbours' numbering runs head to foot
        axial = -axial
    return axial / np.linalg.norm(axial)


def _vertebra_frame(axial: np.ndarray, scan_anterior: np.ndarray) -> np.ndarray:
    """(lateral, anterior, axial) columns in RAS: the scan's anterior made orthogonal to ``axial``."""
    anterior = scan_anterior - np.dot(scan_anterior, axial) * axial
    anterior /= np.linalg.norm(anterior)
    return np.stack([np.cross(anterior, axial), anterior, axial], axis=1)


def _body_back(local: np.ndarray) -> float:
    """Anterior coordinate (local mm) of the body's back wall, for vertebra points (N x 3 local mm).

    The mid-sagittal column's occupancy along the anterior axis runs from the
    body's front through the body, then drops to nothing in the canal; the
    body ends where it first drops.
    """
    u, v = local[:, 0], local[:, 1]
    column = v[np.abs(u - np.median(u)) < _COLUMN_MM]
    if column.size == 0:
        column = v
    front = float(column.max())
    bins = np.arange(np.floor(column.min()), np.ceil(front) + 1.0, 1.0)
    counts, edges = np.histogram(column, bins=bins)
    threshold = 0.02 * counts.max()
    for index in range(len(counts) - 1, -1, -1):  # front to back
        if counts[index] <= threshold and front - edges[index + 1] > 10.0:
            return float(edges[index + 1])
    return front - 0.45 * (front - float(v.min()))  # no canal gap found: the front 45 % of the depth


def _real_shape(level: int, volume: Volume, centroid: np.ndarray, axial: np.ndarray,
                scan_anterior: np.ndarray) -> RealShape:
    """Signed distance field, frame and body geometry of one label."""
    mask = volume.array == level
    frame = _vertebra_frame(axial, scan_anterior)
    ijk = np.argwhere(mask)
    local = (volume.ijk_to_ras(ijk) - centroid) @ frame
    spacing = volume.spacing
    step = np.abs(frame.T @ volume.direction) @ spacing  # local extent of one voxel, roughly
    # The body: everything in front of the canal. Its width and height come from its front 60 %,
    # which holds no pedicles or transverse processes; its depth from the front to the canal.
    back = _body_back(local)
    body = local[local[:, 1] > back]
    front = float(np.percentile(body[:, 1], 99.5)) + 0.5 * step[1]
    core = body[body[:, 1] > back + 0.4 * (front - back)]
    low, high = np.percentile(core, 0.5, axis=0), np.percentile(core, 99.5, axis=0)
    width, height = float(high[0] - low[0] + step[0]), float(high[2] - low[2] + step[2])
    depth = front - back
    centre_local = np.array([0.5 * (low[0] + high[0]), 0.5 * (front + back), 0.5 * (low[2] + high[2])])
    body_centre = centroid + frame @ centre_local

    margin = np.ceil(_MARGIN_MM / spacing).astype(int)
    start, stop = ijk.min(axis=0) - margin, ijk.max(axis=0) + margin + 1
    # Beyond the label map counts as outside, so a vertebra cut by the scan's edge gets a closed surface there.
    crop = np.zeros(stop - start, dtype=bool)
    inner_start, inner_stop = np.maximum(start, 0), np.minimum(stop, volume.shape)
    crop[tuple(slice(a - s, b - s) for a, b, s in zip(inner_start, inner_stop, start))] = \
        mask[tuple(slice(a, b) for a, b in zip(inner_start, inner_stop))]
    inside = ndimage.distance_transform_edt(crop, sampling=spacing)
    outside = ndimage.distance_transform_edt(~crop, sampling=spacing)
    field = (outside - inside).astype(np.float32)  # zero halfway between an inside and an outside voxel

    ijk_from_ras = np.linalg.inv(volume.affine)
    ijk_from_ras[:3, 3] -= start
    return RealShape(level, field, ijk_from_ras, frame, body_centre, (height, width, depth),
                     float(mask.sum() * np.prod(spacing)))


class RealShapeLibrary:
    """Signed distance fields of real vertebrae, sampled in a phantom vertebra's frame.

    Build it with :meth:`load` (one label map) or :meth:`merged` (several); ``levels`` lists the VerSe
    numbers it holds.
    Shapes are real, flaws included: in the default sample (sub-verse004) L1
    (20) is wedge-shaped (an anterior compression), which body-to-body scaling
    only partly evens out.
    ``scale_jitter`` is the largest random extra scale per axis (0.15 = +-15 %)
    and ``max_tilt_deg`` the largest random rotation about each axis.
    """

    def __init__(self, shapes: dict[int, RealShape | list[RealShape]], scale_jitter: float = 0.15,
                 max_tilt_deg: float = 4.0):
        if not shapes:
            raise ValueError("a real shape library needs at least one vertebra")
        if not 0.0 <= scale_jitter < 1.0:
            raise ValueError(f"scale_jitter must be in [0, 1), got {scale_jitter}")
        self.all_shapes = {level: list(held) if isinstance(held, list) else [held]
                           for level, held in sorted(shapes.items())}
        self.shapes = {level: held[0] for level, held in self.all_shapes.items()}
        self.levels: tuple[int, ...] = tuple(self.shapes)
        self.scale_jitter = float(scale_jitter)
        self.max_tilt_deg = float(max_tilt_deg)

    @classmethod
    def load(cls, label_map: str | Path, centroids: str | Path | None = None, *,
             scale_jitter: float = 0.15, max_tilt_deg: float = 4.0) -> "RealShapeLibrary":
        """Read a VerSe vertebra label map (and optionally its centroid file) and precompute every level.

        Without ``centroids``, each label's own centroid sets the axial direction.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: the label map holds no vertebra labels, or the files disagree.
        """
        label_map = Path(label_map)
        for path in (label_map, None if centroids is None else Path(centroids)):
            if path is not None and not path.is_file():
                raise FileNotFoundError(
                    f"real vertebra shapes: {path} not found. The project's VerSe sample is "
                    "../shared/data/real/ct_verse_sample beside the checkout (see ../shared/data/real/README.md); "
                    "pass the paths of a VerSe label map and centroid file")
        volume = read_volume(label_map, VolumeKind.LABEL)
        volume = volume.with_array(np.rint(volume.array).astype(np.int16))
        present = [int(label) for label in np.unique(volume.array) if 1 <= label <= 28]
        if not present:
            raise ValueError(f"{label_map} holds no VerSe vertebra labels (1-28)")
        if centroids is None:
            points = ndimage.center_of_mass(np.ones(volume.shape), volume.array, present)
            centres = {level: volume.ijk_to_ras(np.array(p))[0] for level, p in zip(present, points)}
        else:
            centres = _read_centroids(Path(centroids), volume)
            missing = [level for level in present if level not in centres]
            if missing:
                raise ValueError(f"{centroids} has no centroid for level(s) {missing} of {label_map}")
        subject = label_map.name.split("_")[0]
        shapes = {}
        for level in present:
            axial = _axial_direction(level, centres, np.array([0.0, 0.0, 1.0]))
            real = _real_shape(level, volume, centres[level], axial, np.array([0.0, 1.0, 0.0]))
            shapes[level] = replace(real, fractured=(subject, level) in _FRACTURED)
        return cls(shapes, scale_jitter, max_tilt_deg)

    @classmethod
    def merged(cls, libraries: Sequence["RealShapeLibrary"]) -> "RealShapeLibrary":
        """One library holding every shape of ``libraries`` (a level may then have several)."""
        if not libraries:
            raise ValueError("merging real shape libraries needs at least one")
        shapes: dict[int, list[RealShape]] = {}
        for library in libraries:
            for level, held in library.all_shapes.items():
                shapes.setdefault(level, []).extend(held)
        return cls(shapes, libraries[0].scale_jitter, libraries[0].max_tilt_deg)

    def shape(self, level: int) -> RealShape:
        """The (first) precomputed real vertebra of ``level``; ValueError names the levels held."""
        try:
            return self.shapes[level]
        except KeyError:
            raise ValueError(f"no real vertebra shape for level {level}; this library holds levels "
                             f"{list(self.levels)}") from None

    def choices(self, stand_in_for: int) -> list[RealShape]:
        """The real vertebrae that may paint a phantom level whose stand-in is ``stand_in_for``: its
        unfractured ones (a level held only as fractured has none)."""
        return [real for real in self.all_shapes.get(stand_in_for, []) if not real.fractured]

    def signed_distance(self, level: int, vertebra: PlacedVertebra, u: np.ndarray, v: np.ndarray,
                        w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Signed distance (mm, negative inside, float32) of real vertebra ``level`` at local points (u, v, w).

        The real body centre sits at the origin, its body is scaled to
        ``vertebra.size`` (height, width, depth) times a random extra scale per
        axis, and it is tilted by a few random degrees; the draws come from
        ``rng`` (six numbers per call, and one more to choose among several
        shapes of ``level``). A phantom vertebra of the same level may take a
        fractured shape, another level never does. Points beyond the real field
        get :data:`FAR_MM`.
        """
        held = self.all_shapes.get(level)
        if held is None:
            self.shape(level)  # raises, naming the levels held
        options = held if vertebra.level == level else (self.choices(level) or held)
        real = options[0] if len(options) == 1 else options[int(rng.integers(len(options)))]
        u, v, w = (np.asarray(a, dtype=np.float32) for a in (u, v, w))
        if not u.shape == v.shape == w.shape:
            raise ValueError(f"u, v and w must share a shape, got {u.shape}, {v.shape}, {w.shape}")
        size = vertebra.size
        height, width, depth = real.body_size
        extra = 1.0 + rng.uniform(-self.scale_jitter, self.scale_jitter, 3)
        tilt = rng.uniform(-self.max_tilt_deg, self.max_tilt_deg, 3)
        scale = np.array([size.body_width / width, size.body_depth / depth, size.body_height / height]) * extra
        rotation = Rotation.from_euler("xyz", tilt, degrees=True).as_matrix()
        # Phantom point x = R S y for a real local point y, so y = S^-1 R^T x.
        to_ijk = real.ijk_from_local()
        linear = to_ijk[:, :3] @ np.diag(1.0 / scale) @ rotation.T
        coords = np.empty((3,) + u.shape, dtype=np.float32)
        for row in range(3):
            a, b, c = (_F(x) for x in linear[row])
            coords[row] = a * u + b * v + c * w + _F(to_ijk[row, 3])
        mm = float(np.cbrt(np.prod(scale)))  # real mm to phantom mm, on average over the axes
        sd = ndimage.map_coordinates(real.field, coords, order=1, mode="constant", cval=FAR_MM / mm,
                                     prefilter=False, output=np.float32)
        sd *= _F(mm)
        return sd


def load_sample_folder(folder: str | Path) -> RealShapeLibrary:
    """The library of a VerSe folder holding ``*_msk.nii.gz`` label maps, each optionally with its
    ``*_ctd.json`` centroid file (named alike up to ``_seg``).

    Raises:
        FileNotFoundError: the folder is missing or holds no label map.
    """
    folder = Path(folder)
    masks = sorted(folder.glob("*_msk.nii*")) if folder.is_dir() else []
    if not masks:
        raise FileNotFoundError(
            f"real vertebra shapes: expected VerSe label maps (*_msk.nii.gz) in {folder}, found none; "
            "the project's sample is ../shared/data/real/ct_verse_sample beside the checkout (see "
            "../shared/data/real/README.md)")
    libraries = []
    for mask in masks:
        stem = mask.name.split("_seg")[0]
        centroids = sorted(folder.glob(f"{stem}_seg*_ctd.json")) or sorted(folder.glob(f"{stem}*_ctd.json"))
        if len(masks) == 1 and not centroids:
            centroids = sorted(folder.glob("*_ctd.json"))
        libraries.append(RealShapeLibrary.load(mask, centroids[0] if len(centroids) == 1 else None))
    return libraries[0] if len(libraries) == 1 else RealShapeLibrary.merged(libraries)


def load_shape_folders(folders: str) -> RealShapeLibrary:
    """One library from ``data.real_shapes``: VerSe folders (see :func:`load_sample_folder`) separated by commas."""
    names = [name.strip() for name in folders.split(",") if name.strip()]
    libraries = [load_sample_folder(name) for name in names]
    return libraries[0] if len(libraries) == 1 else RealShapeLibrary.merged(libraries)
