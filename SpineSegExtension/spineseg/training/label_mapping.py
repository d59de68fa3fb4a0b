"""Label maps in another numbering turned into VerSe numbers, so a user's own labelled CTs train as they are.

``data.label_mapping`` (``spineseg train --labels``) is a preset name, a list
``FROM:TO,FROM:TO`` or the path of a two-column CSV file (``from,to``, a
header line allowed). Values the mapping does not name become background:
a TotalSegmentator map holds organs, ribs and vessels besides the vertebrae.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["PRESETS", "TOTALSEGMENTATOR", "resolve_mapping", "apply_mapping", "describe_mapping"]

# TotalSegmentator v2 ids: 25 sacrum, 26 vertebrae_S1 (part of the sacrum), 27 L5, 28 L4 ... 31 L1, 32 T12 ...
# 43 T1, 44 C7 ... 50 C1; VerSe: 1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5, 26 sacrum.
TOTALSEGMENTATOR: dict[int, int] = {25: 26, 26: 26, **{ts_id: 51 - ts_id for ts_id in range(27, 51)}}
PRESETS: dict[str, dict[int, int]] = {"totalsegmentator": TOTALSEGMENTATOR}


def _pairs(rows: list[list[str]], origin: str) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for row in rows:
        if len(row) != 2:
            raise InputError(f"{origin}: each entry must be FROM,TO (two whole numbers), got {row}")
        try:
            source, target = int(row[0]), int(row[1])
        except ValueError:
            raise InputError(f"{origin}: {row} are not whole numbers") from None
        if not (0 < source < 65536 and 0 <= target <= 28):
            raise InputError(f"{origin}: {source} -> {target} is out of range (TO must be a VerSe number 1-28, "
                             "or 0 for background)")
        mapping[source] = target
    return mapping


def resolve_mapping(spec: str) -> dict[int, int]:
    """The mapping ``spec`` names: a preset, ``FROM:TO,...`` pairs, or a CSV file of ``from,to`` rows.

    Raises:
        InputError: an unknown preset, an unreadable file, or entries that are not pairs of label values.
    """
    spec = spec.strip()
    if spec.lower() in PRESETS:
        return dict(PRESETS[spec.lower()])
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise InputError(f"label mapping file not found: {path}")
        with open(path, newline="") as stream:
            rows = [row for row in csv.reader(stream) if row and not row[0].strip().startswith("#")]
        if rows and not rows[0][0].strip().lstrip("-").isdigit():
            rows = rows[1:]  # a header line
        return _pairs([[cell.strip() for cell in row] for row in rows], str(path))
    if ":" in spec:
        return _pairs([pair.split(":") for pair in spec.split(",") if pair.strip()], "label mapping")
    raise InputError(f"unknown label mapping {spec!r}: give a preset ({', '.join(PRESETS)}), FROM:TO pairs "
                     "(e.g. 31:20,32:19) or a .csv file of from,to rows")


def apply_mapping(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """``labels`` renumbered by ``mapping`` (uint8); values it does not name become 0."""
    table = np.zeros(max(int(labels.max(initial=0)), max(mapping, default=0)) + 1, np.uint8)
    for source, target in mapping.items():
        table[source] = target
    return table[labels.astype(np.int64)]


def describe_mapping(spec: str) -> str:
    """How a model card or manifest names the mapping: the preset's name, or the pairs it holds."""
    if spec.strip().lower() in PRESETS:
        return f"{spec.strip().lower()} preset"
    return ", ".join(f"{source}->{target}" for source, target in sorted(resolve_mapping(spec).items()))
