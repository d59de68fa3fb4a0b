"""CT appearance for :mod:`.synth`: Hounsfield priors per tissue class, plaque, metal and its streaks,
vacuum and calcified discs, osteophytes bridging two bodies.

The realistic priors are wide on purpose: bone from fatty, osteoporotic marrow
to dense (cancellous -50-350 HU: elderly lumbar bodies read 0-100 HU, fatty
marrow lower; cortex 300-1500 HU), discs 50-130 HU, vessels without and with
contrast (100-450 HU; the aorta lies against the bodies, see
:func:`.ct_body.paint_body`), calcified plaque 300-1000 HU. Degenerate
discs hold gas (vacuum phenomenon, -1000 to -400 HU) or calcium (200-900 HU);
osteophytes (bone, not labelled as either vertebra) bridge a disc's rim from
one body to the next. Noise covers standard to very low dose (up to 120 HU);
kernels run from soft to sharp; slices from 0.5 to 5 mm.
The other half of the images draws every class anywhere in -1000..1500 HU,
so the network cannot rely on any one contrast between tissues.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .ct_tissue import SCANNER_HU_RANGE, Tissue
from .synth import OUTSIDE_CLASS, AppearanceModel, ClassPrior, synthesize

__all__ = ["PLAQUE", "METAL", "DISC_GAS", "DISC_CALCIUM", "OSTEOPHYTE", "CT_APPEARANCE", "ct_generation_classes",
           "synthesize_ct"]

# Classes the generator adds to the phantom's tissue map.
PLAQUE = len(Tissue)  # calcified plaque in the aortic wall
METAL = len(Tissue) + 1  # a metal-like bright object
DISC_GAS = len(Tissue) + 2  # vacuum phenomenon: gas in a degenerate disc
DISC_CALCIUM = len(Tissue) + 3  # a calcified disc
OSTEOPHYTE = len(Tissue) + 4  # a bony bridge over a disc's rim, from one body to the next

_T = Tissue
CT_APPEARANCE = AppearanceModel(
    priors={
        _T.AIR: ClassPrior((-1010.0, -950.0), (0.0, 10.0)),
        _T.LUNG: ClassPrior((-920.0, -700.0), (10.0, 60.0)),
        _T.FAT: ClassPrior((-130.0, -70.0), (5.0, 20.0)),
        _T.MESENTERIC_FAT: ClassPrior((-120.0, -30.0), (5.0, 30.0)),
        _T.UPPER_ABDOMEN: ClassPrior((-50.0, 40.0), (5.0, 30.0)),
        _T.PSOAS: ClassPrior((30.0, 70.0), (5.0, 20.0)),
        _T.PARASPINAL_MUSCLE: ClassPrior((20.0, 70.0), (5.0, 20.0)),
        _T.ORGAN: ClassPrior((20.0, 80.0), (5.0, 20.0)),
        _T.LIVER: ClassPrior((40.0, 130.0), (5.0, 15.0)),
        _T.BOWEL: ClassPrior((0.0, 80.0), (5.0, 30.0)),
        _T.BOWEL_GAS: ClassPrior((-1000.0, -600.0), (10.0, 80.0)),
        _T.BLOOD: ClassPrior((30.0, 60.0), (3.0, 10.0)),
        _T.AORTA_ENHANCED: ClassPrior((100.0, 450.0), (5.0, 20.0)),
        _T.KIDNEY: ClassPrior((25.0, 50.0), (3.0, 10.0)),
        _T.KIDNEY_ENHANCED: ClassPrior((100.0, 250.0), (5.0, 20.0)),
        _T.CSF: ClassPrior((0.0, 25.0), (3.0, 10.0)),
        _T.CORD: ClassPrior((20.0, 45.0), (3.0, 10.0)),
        _T.NUCLEUS: ClassPrior((50.0, 110.0), (5.0, 15.0)),
        _T.ANNULUS: ClassPrior((60.0, 130.0), (5.0, 15.0)),
        _T.TABLE_SHELL: ClassPrior((100.0, 500.0), (5.0, 30.0)),
        _T.TABLE_CORE: ClassPrior((-1000.0, -700.0), (5.0, 30.0)),
        _T.CORTEX: ClassPrior((300.0, 1500.0), (20.0, 100.0)),
        _T.CANCELLOUS: ClassPrior((-50.0, 350.0), (15.0, 80.0)),
        _T.ENDPLATE: ClassPrior((300.0, 1200.0), (20.0, 80.0)),
        _T.OTHER_CORTEX: ClassPrior((250.0, 1200.0), (20.0, 100.0)),
        _T.OTHER_MARROW: ClassPrior((-50.0, 300.0), (15.0, 60.0)),
        PLAQUE: ClassPrior((300.0, 1000.0), (10.0, 50.0)),
        METAL: ClassPrior((2000.0, 3071.0), (0.0, 100.0)),
        DISC_GAS: ClassPrior((-1000.0, -400.0), (10.0, 80.0)),
        DISC_CALCIUM: ClassPrior((200.0, 900.0), (20.0, 80.0)),
        OSTEOPHYTE: ClassPrior((250.0, 1200.0), (20.0, 100.0)),
    },
    random_mean=(-1000.0, 1500.0),
    random_texture=(0.0, 80.0),
    value_range=SCANNER_HU_RANGE,
    realistic_probability=0.6,
    textured=frozenset({_T.CANCELLOUS, _T.OTHER_MARROW, _T.LUNG}),
    blob_amplitude=30.0,
    kernel_mm=(0.3, 1.2),
    sharpen_probability=0.3,
    slice_thickness_mm=(0.5, 5.0),
    noise=(3.0, 120.0),
    noise_correlation_voxels=(0.0, 1.2),
)

PLAQUE_PROBABILITY = 0.3
METAL_PROBABILITY = 0.05
# Per disc in the patch: the chance that it holds gas, calcium or a bridging osteophyte.
DISC_GAS_PROBABILITY = 0.1
DISC_CALCIUM_PROBABILITY = 0.05
OSTEOPHYTE_PROBABILITY = 0.1
_BONE = (_T.CORTEX, _T.CANCELLOUS)


def _ball(mask: np.ndarray, centre: np.ndarray, radius_voxels: float) -> np.ndarray:
    """The voxels of ``mask`` within ``radius_voxels`` of ``centre``."""
    grid = np.indices(mask.shape, dtype=np.float32)
    distance = np.sqrt(sum((axis - float(c)) ** 2 for axis, c in zip(grid, centre)))
    return mask & (distance <= radius_voxels)


def _degenerate_discs(classes: np.ndarray, tissue: np.ndarray, spacing_mm: float, rng: np.random.Generator) -> None:
    """In place: gas in a disc's nucleus, calcium in a disc, and osteophytes bridging a disc's rim.

    Each disc (a connected piece of nucleus and annulus) draws its own changes. The gas is a cleft of the
    nucleus (4-10 mm about a random nucleus voxel); the calcium a 3-8 mm lump of the disc; the osteophyte a
    sector of the disc's outer rim (6-12 mm about a random rim voxel) and the soft tissue just outside it,
    so that bone runs from one body's edge over the disc to the next body.
    """
    discs, count = ndimage.label(np.isin(tissue, (_T.NUCLEUS, _T.ANNULUS)))
    for index in range(1, count + 1):
        disc = discs == index
        nucleus = disc & (tissue == _T.NUCLEUS)
        if nucleus.any() and rng.random() < DISC_GAS_PROBABILITY:
            seeds = np.argwhere(nucleus)
            classes[_ball(nucleus, seeds[rng.integers(len(seeds))], rng.uniform(4.0, 10.0) / spacing_mm)] = DISC_GAS
        if rng.random() < DISC_CALCIUM_PROBABILITY:
            seeds = np.argwhere(disc)
            classes[_ball(disc, seeds[rng.integers(len(seeds))], rng.uniform(3.0, 8.0) / spacing_mm)] = DISC_CALCIUM
        if rng.random() < OSTEOPHYTE_PROBABILITY:
            soft = ~disc & ~np.isin(tissue, _BONE) & (tissue != OUTSIDE_CLASS)
            rim = disc & ndimage.binary_dilation(soft)
            if not rim.any():
                continue
            seeds = np.argwhere(rim)
            sector = _ball(rim, seeds[rng.integers(len(seeds))], rng.uniform(6.0, 12.0) / spacing_mm)
            spur = sector | (ndimage.binary_dilation(sector) & soft)
            classes[spur] = OSTEOPHYTE


def ct_generation_classes(tissue: np.ndarray, rng: np.random.Generator, spacing_mm: float = 1.0) -> np.ndarray:
    """The phantom's tissue map with endplates marked, and sometimes plaque in the aorta, a metal object and
    degenerate discs (gas, calcium, bridging osteophytes; see :func:`_degenerate_discs`).

    Endplates are vertebral cortex touching a disc. Plaque is a few spots on the
    aorta's wall; the metal object is a small ball anywhere in the body.
    """
    classes = tissue.copy()
    discs = np.isin(tissue, (_T.NUCLEUS, _T.ANNULUS))
    if discs.any():
        classes[ndimage.binary_dilation(discs) & (tissue == _T.CORTEX)] = _T.ENDPLATE
        _degenerate_discs(classes, tissue, spacing_mm, rng)
    aorta = np.isin(tissue, (_T.BLOOD, _T.AORTA_ENHANCED))
    if aorta.any() and rng.random() < PLAQUE_PROBABILITY:
        wall = np.argwhere(ndimage.binary_dilation(aorta) & ~aorta & (tissue != OUTSIDE_CLASS))
        if len(wall):
            spots = wall[rng.integers(len(wall), size=int(rng.integers(1, 6)))]
            classes[tuple(spots.T)] = PLAQUE
    body = np.argwhere((tissue != _T.AIR) & (tissue != OUTSIDE_CLASS))
    if len(body) and rng.random() < METAL_PROBABILITY:
        centre = body[rng.integers(len(body))]
        radius = rng.uniform(1.0, 3.0)
        grid = np.indices(tissue.shape).reshape(3, -1).T
        inside = np.linalg.norm(grid - centre, axis=1) <= radius
        classes.reshape(-1)[inside] = METAL
    return classes


def _add_streaks(image: np.ndarray, metal: np.ndarray, rng: np.random.Generator, axial_axis: int) -> None:
    """Bright and dark streaks through the metal in its axial slices, fading with distance."""
    centre = np.argwhere(metal).mean(axis=0)
    plane = [axis for axis in range(3) if axis != axial_axis]
    shape2 = [image.shape[axis] for axis in plane]
    a, b = np.meshgrid(np.arange(shape2[0]) - centre[plane[0]], np.arange(shape2[1]) - centre[plane[1]], indexing="ij")
    streaks = np.zeros(shape2, dtype=np.float32)
    for angle in rng.uniform(0.0, np.pi, int(rng.integers(3, 9))):
        distance = np.abs(a * np.sin(angle) - b * np.cos(angle))
        strength = rng.uniform(100.0, 600.0) * rng.choice((-1.0, 1.0))
        streaks += strength * np.exp(-distance**2 / 2.0) / (1.0 + np.hypot(a, b) / 10.0)
    slices = np.flatnonzero(metal.any(axis=tuple(plane)))
    low, high = max(slices.min() - 1, 0), min(slices.max() + 2, image.shape[axial_axis])
    index = [slice(None)] * 3
    index[axial_axis] = slice(low, high)
    view = np.moveaxis(image[tuple(index)], axial_axis, -1)
    view += streaks[..., np.newaxis]


def synthesize_ct(tissue: np.ndarray, spacing_mm, rng: np.random.Generator,
                  appearance: AppearanceModel = CT_APPEARANCE, axial_axis: int = 2) -> np.ndarray:
    """One CT image in Hounsfield units (float32) of a phantom tissue map, with a random appearance."""
    classes = ct_generation_classes(tissue, rng, float(np.mean(spacing_mm)))
    image = synthesize(classes, spacing_mm, appearance, rng, axial_axis)
    metal = classes == METAL
    if metal.any():
        _add_streaks(image, metal, rng, axial_axis)
        np.clip(image, *SCANNER_HU_RANGE, out=image)
    return image
