"""Tissue of the CT phantom: Hounsfield units and the random subject (painted by :mod:`.ct_body`).

Every tissue value is a named constant with where it comes from. Typical
unenhanced values are textbook CT ranges (air -1000 by definition of the
scale, fat about -100, water 0, soft tissue 30-60 HU); the phantom picks one
value inside each range.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ..anatomy import STANDARD_LEVELS

__all__ = ["Subject", "draw_subject", "SCANNER_HU_RANGE", "AIR_HU", "Tissue", "TISSUE_HU"]

# ---------------------------------------------------------------- Hounsfield units
SCANNER_HU_RANGE = (-1024.0, 3071.0)  # what a 12-bit CT stores; images are clipped to it
AIR_HU = -1000.0  # by definition of the Hounsfield scale
LUNG_HU = -850.0  # aerated lung parenchyma, typically -900 to -700
FAT_HU = -100.0  # subcutaneous fat, typically -120 to -80
MESENTERIC_FAT_HU = -70.0  # abdominal fat, raised a little by the vessels and bowel it holds
UPPER_ABDOMEN_HU = 0.0  # below the diaphragm (T12) fat and organs mix within a voxel
MUSCLE_HU = 50.0  # skeletal muscle (psoas), typically 40-60
PARASPINAL_MUSCLE_HU = MUSCLE_HU + 5.0  # a shade apart from psoas, so the muscle groups differ
ORGAN_HU = 45.0  # unenhanced soft-tissue organs and the body's bulk, typically 30-60
LIVER_HU = 58.0  # unenhanced liver, typically 55-65 (denser than other organs)
BOWEL_HU = 35.0  # bowel wall and contents, soft tissue
BOWEL_GAS_HU = -900.0  # gas pockets, not quite air after partial volume
BLOOD_HU = 42.0  # unenhanced blood in the aorta, typically 40-45
AORTA_ENHANCED_HU = 180.0  # aorta after IV contrast (arterial to portal phase, 150-300)
KIDNEY_HU = 32.0  # unenhanced kidney, typically 30-35
KIDNEY_ENHANCED_HU = 150.0  # kidney after IV contrast (nephrographic phase)
CSF_HU = 15.0  # cerebrospinal fluid, typically 0-15
CORD_HU = 35.0  # spinal cord, typically 30-40 (brighter than the CSF around it)
NUCLEUS_HU = 75.0  # disc nucleus pulposus; discs are 70-100 HU
ANNULUS_HU = 100.0  # disc annulus fibrosus, denser than the nucleus
TABLE_SHELL_HU = 250.0  # carbon-fibre skin of the patient table
TABLE_CORE_HU = -850.0  # foam core of the patient table

# Bone, drawn per subject. Cancellous bone: osteoporotic to young (real lumbar cores 50-250 HU).
CANCELLOUS_HU_RANGE = (110.0, 290.0)
CORTICAL_HU_RANGE = (700.0, 1050.0)  # cortical shell after partial volume with the thin cortex
CORTEX_MM_RANGE = (1.0, 1.5)  # vertebral cortex thickness
CANCELLOUS_LEVEL_JITTER_HU = 12.0  # per-level spread of marrow density within one subject
CANCELLOUS_HU_PER_LEVEL = 3.0  # marrow density falls slightly from head to foot
SACRUM_MARROW_DROP_HU = 40.0  # sacral marrow is fattier than the lumbar bodies'
MARROW_TEXTURE_HU = 35.0  # trabecular texture of cancellous bone (per-voxel spread)
FUSED_DISC_DROP_HU = 70.0  # faint remnants of the fused discs inside the sacrum
OTHER_CORTICAL_FACTOR = 0.85  # ribs and ilium: a somewhat dimmer cortex than the vertebrae's
OTHER_MARROW_OFFSET_HU = -60.0  # ribs and ilium: fattier marrow than the vertebral bodies'


class Tissue(IntEnum):
    """Generation classes of the CT phantom: finer than the vertebra labels, one per tissue the image shows.

    The phantom paints a class map beside its Hounsfield units, so that
    :mod:`spineseg.phantoms.synth` can draw a new appearance for every class
    (SynthSeg-style training images). Bone classes come from the partial-volume
    fractions of each voxel: mostly marrow is cancellous, mostly bone is cortex.
    """

    AIR = 0
    LUNG = 1
    FAT = 2
    MESENTERIC_FAT = 3
    UPPER_ABDOMEN = 4
    PSOAS = 5
    PARASPINAL_MUSCLE = 6
    ORGAN = 7
    LIVER = 8
    BOWEL = 9
    BOWEL_GAS = 10
    BLOOD = 11
    AORTA_ENHANCED = 12
    KIDNEY = 13
    KIDNEY_ENHANCED = 14
    CSF = 15
    CORD = 16
    NUCLEUS = 17
    ANNULUS = 18
    TABLE_SHELL = 19
    TABLE_CORE = 20
    CORTEX = 21  # vertebral cortex
    CANCELLOUS = 22  # vertebral marrow
    ENDPLATE = 23  # vertebral cortex next to a disc (found by the generator from the class map)
    OTHER_CORTEX = 24  # ribs and ilium
    OTHER_MARROW = 25


# Soft-tissue classes painted with one fixed value (bone is blended per voxel, see ct_render).
TISSUE_HU: dict[Tissue, float] = {
    Tissue.AIR: AIR_HU, Tissue.LUNG: LUNG_HU, Tissue.FAT: FAT_HU, Tissue.MESENTERIC_FAT: MESENTERIC_FAT_HU,
    Tissue.UPPER_ABDOMEN: UPPER_ABDOMEN_HU, Tissue.PSOAS: MUSCLE_HU, Tissue.PARASPINAL_MUSCLE: PARASPINAL_MUSCLE_HU,
    Tissue.ORGAN: ORGAN_HU, Tissue.LIVER: LIVER_HU, Tissue.BOWEL: BOWEL_HU, Tissue.BOWEL_GAS: BOWEL_GAS_HU,
    Tissue.BLOOD: BLOOD_HU, Tissue.AORTA_ENHANCED: AORTA_ENHANCED_HU, Tissue.KIDNEY: KIDNEY_HU,
    Tissue.KIDNEY_ENHANCED: KIDNEY_ENHANCED_HU, Tissue.CSF: CSF_HU, Tissue.CORD: CORD_HU, Tissue.NUCLEUS: NUCLEUS_HU,
    Tissue.ANNULUS: ANNULUS_HU, Tissue.TABLE_SHELL: TABLE_SHELL_HU, Tissue.TABLE_CORE: TABLE_CORE_HU,
}


# ---------------------------------------------------------------- the subject


@dataclass(frozen=True)
class Subject:
    """Random per-subject soft-tissue and bone parameters (independent of the scan grid)."""

    body_scale: float
    fat_mm: float
    iv_contrast: bool  # an intravenous contrast agent enhances the aorta and kidneys
    cancellous_base: float
    cortical: float
    cortex_mm: float
    gas: np.ndarray  # (N, 4): level index, lateral mm, anterior mm, radius mm
    level_jitter: np.ndarray  # per standard level: cancellous HU offset
    table: bool


def draw_subject(rng: np.random.Generator) -> Subject:
    """Draw one subject's soft tissue and bone (the same ``rng`` state gives the same subject)."""
    count = int(rng.integers(6, 18))
    gas = np.stack([rng.uniform(18.0, 25.0, count), rng.uniform(-90.0, 90.0, count),
                    rng.uniform(40.0, 140.0, count), rng.uniform(4.0, 12.0, count)], axis=1)
    return Subject(
        body_scale=float(rng.uniform(0.9, 1.1)),
        fat_mm=float(rng.uniform(8.0, 30.0)),
        iv_contrast=bool(rng.random() < 0.5),
        cancellous_base=float(rng.uniform(*CANCELLOUS_HU_RANGE)),
        cortical=float(rng.uniform(*CORTICAL_HU_RANGE)),
        cortex_mm=float(rng.uniform(*CORTEX_MM_RANGE)),
        gas=gas,
        level_jitter=rng.normal(0.0, CANCELLOUS_LEVEL_JITTER_HU, len(STANDARD_LEVELS)),
        table=bool(rng.random() < 0.7),
    )
