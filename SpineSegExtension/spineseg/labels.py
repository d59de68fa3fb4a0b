"""Vertebra and disc naming: VerSe numbers, names, SNOMED-CT codes and colours.

Vertebrae follow the VerSe numbering (1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5,
25 L6, 26 sacrum, 28 T13). Discs follow the Spinal Cord Toolbox numbering: the
disc above vertebra v carries v's number (2 = C1/C2, 25 = L5/S1).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

from .anatomy import HEAD_TO_FOOT, L6, SACRUM, T13

__all__ = [
    "VERTEBRA_NAMES",
    "vertebra_name",
    "vertebra_segment_name",
    "vertebra_colour",
    "vertebra_terminology",
    "disc_name",
    "disc_number",
    "DISC_NUMBERS",
    "TerminologyCode",
    "ANATOMICAL_STRUCTURE",
    "VERTEBRA_UNSPECIFIED",
    "INTERVERTEBRAL_DISC",
    "TERMINOLOGY_CONTEXT",
    "DISC_COLOUR",
]

VERTEBRA_NAMES: dict[int, str] = {
    **{n: f"C{n}" for n in range(1, 8)},
    **{n: f"T{n - 7}" for n in range(8, 20)},
    **{n: f"L{n - 19}" for n in range(20, 25)},
    L6: "L6",
    SACRUM: "sacrum",
    T13: "T13",
}


@dataclass(frozen=True)
class TerminologyCode:
    """One DICOM coded concept (scheme, value, meaning), optionally refined by a type modifier."""

    scheme: str
    value: str
    meaning: str
    modifier: "TerminologyCode | None" = None


# Name of SpineSeg's own terminology context (Resources/Terminology/SegmentationCategoryTypeModifier-
# SpineSeg.term.json): every vertebra, the sacrum and the discs with their codes and colours, so that
# Slicer's terminology picker lists them. Every segment and point list SpineSeg writes refers to it.
TERMINOLOGY_CONTEXT = "Segmentation category and type - SpineSeg"


ANATOMICAL_STRUCTURE = TerminologyCode("SCT", "123037004", "Anatomical Structure")
VERTEBRA_UNSPECIFIED = TerminologyCode("SCT", "51282000", "Vertebra")
INTERVERTEBRAL_DISC = TerminologyCode("SCT", "360499006", "Intervertebral disc")

_SNOMED_VERTEBRA: dict[int, tuple[str, str]] = {
    1: ("14806007", "C1 vertebra"),
    2: ("39976000", "C2 vertebra"),
    3: ("113205007", "C3 vertebra"),
    4: ("5329002", "C4 vertebra"),
    5: ("36978003", "C5 vertebra"),
    6: ("36054005", "C6 vertebra"),
    7: ("87391001", "C7 vertebra"),
    8: ("64864005", "T1 vertebra"),
    9: ("53733008", "T2 vertebra"),
    10: ("1626008", "T3 vertebra"),
    11: ("73071006", "T4 vertebra"),
    12: ("56401006", "T5 vertebra"),
    13: ("45296009", "T6 vertebra"),
    14: ("62487009", "T7 vertebra"),
    15: ("11068009", "T8 vertebra"),
    16: ("82687006", "T9 vertebra"),
    17: ("7610001", "T10 vertebra"),
    18: ("12989004", "T11 vertebra"),
    19: ("23215003", "T12 vertebra"),
    20: ("66794005", "L1 vertebra"),
    21: ("14293000", "L2 vertebra"),
    22: ("36470004", "L3 vertebra"),
    23: ("11994002", "L4 vertebra"),
    24: ("49668003", "L5 vertebra"),
    SACRUM: ("54735007", "Sacrum"),
}

# SNOMED CT has no concept for the L6 and T13 variants: they are the standard "Vertebra" refined by a
# modifier from a private coding scheme (DICOM private scheme designators start with "99").
_LEVEL_MODIFIER: dict[int, TerminologyCode] = {
    L6: TerminologyCode("99SPINESEG", "L6", "Sixth lumbar level"),
    T13: TerminologyCode("99SPINESEG", "T13", "Thirteenth thoracic level"),
}

DISC_COLOUR: tuple[float, float, float] = (0.4, 1.0, 1.0)  # disc points, in Slicer and in .mrk.json files


def _check_level(level: int) -> int:
    if level not in VERTEBRA_NAMES:
        raise ValueError(f"unknown VerSe vertebra number {level}; expected one of {sorted(VERTEBRA_NAMES)}")
    return level


def vertebra_name(level: int) -> str:
    """Short name of a VerSe number: 'C1', 'T12', 'L5', 'sacrum' (the same word in every output)."""
    return VERTEBRA_NAMES[_check_level(level)]


def vertebra_segment_name(level: int) -> str:
    """Segment name shown in Slicer: 'L3 vertebra', 'Sacrum'."""
    return "Sacrum" if level == SACRUM else f"{vertebra_name(level)} vertebra"


def vertebra_terminology(level: int) -> TerminologyCode:
    """SNOMED-CT type code of a vertebra (for L6 and T13: "Vertebra" with a SpineSeg level modifier)."""
    _check_level(level)
    if level in _SNOMED_VERTEBRA:
        value, meaning = _SNOMED_VERTEBRA[level]
        return TerminologyCode("SCT", value, meaning)
    return TerminologyCode(VERTEBRA_UNSPECIFIED.scheme, VERTEBRA_UNSPECIFIED.value, VERTEBRA_UNSPECIFIED.meaning,
                           _LEVEL_MODIFIER[level])  # fmt: skip


def vertebra_colour(level: int) -> tuple[float, float, float]:
    """A distinct RGB colour (0..1) per level; neighbours differ strongly in hue.

    Cervical, thoracic and lumbar levels keep a family of hues, and a golden-ratio
    step makes adjacent vertebrae easy to tell apart in slice views.
    """
    position = HEAD_TO_FOOT.index(_check_level(level))
    hue = (position * 0.381966) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.75, 0.95)


DISC_NUMBERS: list[int] = list(range(2, 26))


def disc_name(number: int) -> str:
    """Name of the disc with Spinal Cord Toolbox number ``number``: 3 -> 'C2/C3', 25 -> 'L5/S1'.

    Disc numbers count the standard 24 presacral vertebrae: disc n lies between
    vertebra n-1 and vertebra n, and 25 is the lumbosacral disc.
    """
    if number not in DISC_NUMBERS:
        raise ValueError(f"unknown disc number {number}; expected 2 (C1/C2) to 25 (L5/S1)")
    lower = "S1" if number == 25 else VERTEBRA_NAMES[number]
    return f"{VERTEBRA_NAMES[number - 1]}/{lower}"


def disc_number(name: str) -> int:
    """Inverse of :func:`disc_name`."""
    for number in DISC_NUMBERS:
        if disc_name(number) == name:
            return number
    raise ValueError(f"unknown disc name {name!r}; expected names like 'C2/C3' or 'L5/S1'")


def slicer_terminology_entry(code: TerminologyCode, category: TerminologyCode = ANATOMICAL_STRUCTURE) -> str:
    """Serialise a terminology entry the way Slicer stores it in a segment's tags.

    Fields are joined by '~': context (SpineSeg's own, :data:`TERMINOLOGY_CONTEXT`),
    category, type, type modifier, anatomic context, anatomic region, region
    modifier; each code is 'scheme^value^meaning'.
    """
    def coded(item: TerminologyCode | None) -> str:
        return "^^" if item is None else f"{item.scheme}^{item.value}^{item.meaning}"

    return "~".join(
        [
            TERMINOLOGY_CONTEXT,
            coded(category),
            coded(code),
            coded(code.modifier),
            "Anatomic codes - DICOM master list",
            "^^",
            "^^",
        ]
    )


__all__.append("slicer_terminology_entry")
