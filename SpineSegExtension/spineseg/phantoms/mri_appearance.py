"""MRI appearance for :mod:`.synth`: T1-, T2- and STIR-like priors per tissue class, and random contrasts.

Spine MRI comes in many contrasts (T1, T2, STIR, proton density, Dixon,
post-contrast) from many scanners, and real scans add what the basic phantom
lacks: degenerated discs, fatty or patchy marrow, Modic changes next to the
endplates, strong coil bias. Each synthetic image picks one of the realistic
contrasts below and draws every class's signal from that contrast's prior,
or, with probability ``1 - realistic_probability``, a random signal for
every class, so no contrast between tissues can be relied on (SynthSeg,
Billot et al. 2023). Signals are relative (0 = no signal, 1 = brightest
usual tissue); the slab is z-scored after drawing, as at inference.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .mri import MRITissue
from .synth import OUTSIDE_CLASS, AppearanceModel, ClassPrior, synthesize

__all__ = ["ENDPLATE_MARROW", "MRI_CONTRAST_MODELS", "mri_generation_classes", "synthesize_mri"]

ENDPLATE_MARROW = len(MRITissue)  # marrow next to a disc: Modic changes (added by the generator)

_M = MRITissue
# Typical relative signal (low, high) of each class for the realistic contrasts.
_SIGNALS: dict[str, dict[int, tuple[float, float]]] = {
    "T1": {
        _M.BACKGROUND: (0.0, 0.03), _M.FAT: (0.8, 1.0), _M.MUSCLE: (0.2, 0.4), _M.FAT_PAD: (0.6, 0.9),
        _M.AIRWAY: (0.0, 0.05), _M.LUNG: (0.0, 0.08), _M.ORGAN: (0.3, 0.5), _M.POSTERIOR_ELEMENTS: (0.4, 0.7),
        _M.CORTEX: (0.0, 0.1), _M.MARROW: (0.5, 0.9), _M.CSF: (0.05, 0.2), _M.CORD: (0.4, 0.55),
        _M.ANNULUS: (0.15, 0.35), _M.NUCLEUS: (0.25, 0.4), _M.DEGENERATE_NUCLEUS: (0.15, 0.3),
        _M.BRAIN: (0.35, 0.55), _M.SKULL: (0.0, 0.1), _M.CLIVUS: (0.5, 0.85), ENDPLATE_MARROW: (0.2, 1.0),
    },
    "T2": {
        _M.BACKGROUND: (0.0, 0.03), _M.FAT: (0.55, 0.9), _M.MUSCLE: (0.12, 0.3), _M.FAT_PAD: (0.4, 0.8),
        _M.AIRWAY: (0.0, 0.05), _M.LUNG: (0.0, 0.08), _M.ORGAN: (0.3, 0.6), _M.POSTERIOR_ELEMENTS: (0.25, 0.5),
        _M.CORTEX: (0.0, 0.1), _M.MARROW: (0.3, 0.6), _M.CSF: (0.85, 1.0), _M.CORD: (0.3, 0.5),
        _M.ANNULUS: (0.15, 0.35), _M.NUCLEUS: (0.7, 1.0), _M.DEGENERATE_NUCLEUS: (0.15, 0.4),
        _M.BRAIN: (0.4, 0.65), _M.SKULL: (0.0, 0.1), _M.CLIVUS: (0.3, 0.55), ENDPLATE_MARROW: (0.2, 0.9),
    },
    # Fat-suppressed, fluid-sensitive: fat and normal marrow dark, fluid, discs and oedema bright.
    "STIR": {
        _M.BACKGROUND: (0.0, 0.03), _M.FAT: (0.02, 0.15), _M.MUSCLE: (0.1, 0.3), _M.FAT_PAD: (0.02, 0.15),
        _M.AIRWAY: (0.0, 0.05), _M.LUNG: (0.0, 0.08), _M.ORGAN: (0.3, 0.6), _M.POSTERIOR_ELEMENTS: (0.05, 0.25),
        _M.CORTEX: (0.0, 0.08), _M.MARROW: (0.05, 0.3), _M.CSF: (0.8, 1.0), _M.CORD: (0.3, 0.5),
        _M.ANNULUS: (0.1, 0.3), _M.NUCLEUS: (0.6, 1.0), _M.DEGENERATE_NUCLEUS: (0.1, 0.35),
        _M.BRAIN: (0.4, 0.65), _M.SKULL: (0.0, 0.08), _M.CLIVUS: (0.05, 0.3), ENDPLATE_MARROW: (0.3, 1.0),
    },
}


def _contrast_model(signals: dict[int, tuple[float, float]]) -> AppearanceModel:
    return AppearanceModel(
        priors={kind: ClassPrior(mean, (0.0, 0.04)) for kind, mean in signals.items()},
        random_mean=(0.0, 1.0),
        random_texture=(0.0, 0.06),
        value_range=(0.0, 2.0),
        realistic_probability=0.6,
        textured=frozenset({_M.MARROW, ENDPLATE_MARROW, _M.CLIVUS}),  # patchy (fatty, heterogeneous) marrow
        blob_amplitude=0.12,
        blob_size_mm=(5.0, 25.0),
        kernel_mm=(0.0, 0.6),
        slice_thickness_mm=(2.0, 5.0),
        bias_strength=0.5,
        noise=(0.0, 0.04),
        noise_correlation_voxels=(0.0, 0.8),
    )


MRI_CONTRAST_MODELS: dict[str, AppearanceModel] = {name: _contrast_model(s) for name, s in _SIGNALS.items()}

MODIC_PROBABILITY = 0.3  # share of images whose marrow next to the discs gets its own signal
MODIC_DEPTH_VOXELS = (1, 4)
BLOB_COUNT = (0, 6)  # random soft-tissue blobs (cysts, vessels, bowel) with their own signal
BLOB_CLASSES = tuple(range(ENDPLATE_MARROW + 1, ENDPLATE_MARROW + 1 + BLOB_COUNT[1]))


def mri_generation_classes(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The phantom's classes with Modic-like endplate marrow in some images, and random soft-tissue blobs.

    ``classes`` is a stack of sagittal planes (rows, columns, planes); blobs are
    ellipses through all planes, painted only over fat, muscle and organs, so
    the spine's own classes are never covered.
    """
    out = classes.copy()
    discs = np.isin(classes, (_M.ANNULUS, _M.NUCLEUS, _M.DEGENERATE_NUCLEUS))
    if discs.any() and rng.random() < MODIC_PROBABILITY:
        near = ndimage.binary_dilation(discs, iterations=int(rng.integers(*MODIC_DEPTH_VOXELS, endpoint=True)))
        out[near & (classes == _M.MARROW)] = ENDPLATE_MARROW
    soft = np.isin(classes, (_M.FAT, _M.MUSCLE, _M.ORGAN))
    rows, cols = np.indices(classes.shape[:2])
    for kind in BLOB_CLASSES[: int(rng.integers(*BLOB_COUNT, endpoint=True))]:
        centre = rng.uniform(0, classes.shape[:2])
        radii = rng.uniform(3.0, 20.0, 2)
        inside = ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0
        out[inside[..., None] & soft] = kind
    return out


def synthesize_mri(classes: np.ndarray, spacing_mm, rng: np.random.Generator, lateral_axis: int = 2) -> np.ndarray:
    """One MRI (relative signal, float32) of a class map with a random contrast; slices stack along ``lateral_axis``.

    Outside the scan (``OUTSIDE_CLASS``) the image is 0.
    """
    model = MRI_CONTRAST_MODELS[str(rng.choice(sorted(MRI_CONTRAST_MODELS)))]
    image = synthesize(mri_generation_classes(classes, rng), spacing_mm, model, rng, axial_axis=lateral_axis)
    image[classes == OUTSIDE_CLASS] = 0.0
    return image
