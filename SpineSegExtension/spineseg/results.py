"""What the two tasks return: plain dataclasses shared by the CLI, the Slicer glue and tests.

Positions are RAS millimetres; label maps live in the input image's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .labels import disc_name, vertebra_name
from .volume import Volume

__all__ = ["VertebraRecord", "NamingRecord", "VertebraeResult", "DiscRecord", "DiscsResult", "DiscNaming"]


@dataclass(frozen=True)
class VertebraRecord:
    """One segmented vertebra.

    Attributes:
        level: VerSe number (label value in the label map).
        voxel_count: voxels carrying this label in the input grid.
        volume_ml: voxel_count times voxel volume, in millilitres.
        completeness: network's probability that the whole vertebra is in the scan.
        centroid_ras: centre of mass in RAS mm.
    """

    level: int
    voxel_count: int
    volume_ml: float
    completeness: float
    centroid_ras: tuple[float, float, float]

    @property
    def name(self) -> str:
        return vertebra_name(self.level)

    def to_dict(self) -> dict:
        """The entry of ``vertebrae.json``: the keys a disc's entry has (name, number, position_ras), then the
        vertebra's own (docs/output-files.md)."""
        return {"name": self.name, "number": self.level, "position_ras": [round(float(x), 3) for x in self.centroid_ras],
                "completeness": self.completeness, "voxel_count": self.voxel_count, "volume_ml": self.volume_ml}


@dataclass(frozen=True)
class NamingRecord:
    """What fixed the vertebrae's names (see :mod:`spineseg.vertebrae.anchors`).

    Attributes:
        anchor: the most trusted anatomical anchor the names follow ("sacrum", "C2", "last rib", "C7/T1"),
            or None: the run is unanchored and its names rest on the network's regressed positions alone.
        anchors_found: every anchor seen, with the name of the vertebra it marks.
        overruled: anchors seen that disagree with a more trusted one, which the names do not follow.
        variant: "T13" or "L6" when the anchors demanded the extra vertebra.
        renamed: vertebrae (found pieces) named otherwise than the regressed positions alone would name them.
    """

    anchor: str | None = None
    anchors_found: dict[str, str] = field(default_factory=dict)
    overruled: list[str] = field(default_factory=list)
    variant: str | None = None
    renamed: int = 0

    @property
    def anchored(self) -> bool:
        return self.anchor is not None

    def summary(self) -> str:
        """One line for a status bar: which anchor named the run, or that none did."""
        if not self.anchored:
            return "unanchored: names from the network's estimates only"
        on = self.anchors_found.get(self.anchor, "?")
        phrase = {"sacrum": "the sacrum", "C2": "C2's dens", "last rib": f"the last rib (on {on})",
                  "C7/T1": f"the first rib (on {on})"}.get(self.anchor, f"{self.anchor} (on {on})")
        return f"named by {phrase}" + (f", with a {self.variant}" if self.variant else "")

    def to_dict(self) -> dict:
        return {"anchored": self.anchored, "anchor": self.anchor, "anchors_found": dict(self.anchors_found),
                "overruled": list(self.overruled), "variant": self.variant, "renamed": self.renamed}

    @classmethod
    def from_dict(cls, data: dict) -> "NamingRecord":
        """The record ``to_dict`` wrote (what Slicer reads back from ``vertebrae.json``)."""
        return cls(data.get("anchor"), {str(k): str(v) for k, v in dict(data.get("anchors_found") or {}).items()},
                   [str(a) for a in data.get("overruled") or []], data.get("variant"), int(data.get("renamed", 0)))


@dataclass(frozen=True)
class VertebraeResult:
    """Label map (VerSe numbers, input grid, uint8), one record per vertebra head to foot, warnings
    about the input (see :func:`spineseg.checks.check_input`) and how the names were fixed (None where not
    known, as in files of older versions), the spinal canal's centre line (None where not found) and the
    intervertebral discs' planes read from the CT (each a centre and a unit normal towards the foot, RAS mm)."""

    label_map: Volume
    vertebrae: list[VertebraRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    naming: NamingRecord | None = None
    canal_line_ras: np.ndarray | None = None  # the spinal canal's centre line (n x 3, RAS mm, head to foot)
    disc_planes_ras: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (centre, normal), head to foot

    def table(self) -> dict:
        """The task's part of ``vertebrae.json``: how the names were fixed (``naming``, or null), the spine's
        frame read from the CT (``spine_frame``: the canal's centre line and the discs' planes, or null), one
        record per vertebra."""
        def rounded(point: np.ndarray, digits: int) -> list[float]:
            return [round(float(x), digits) for x in point]

        return {
            "naming": self.naming.to_dict() if self.naming is not None else None,
            "spine_frame": None if self.canal_line_ras is None else {
                "canal_centre_line": [rounded(point, 1) for point in self.canal_line_ras],
                "disc_planes": [{"centre_ras": rounded(centre, 1), "normal_to_foot": rounded(normal, 3)}
                                for centre, normal in self.disc_planes_ras]},
            "vertebrae": [record.to_dict() for record in self.vertebrae],
        }

    @staticmethod
    def naming_summary(naming: dict) -> tuple[str, bool]:
        """How a run's names were fixed, read back from its JSON's ``naming``: a phrase and whether anchored."""
        record = NamingRecord.from_dict(naming)
        return record.summary(), record.anchored

    @property
    def levels(self) -> list[int]:
        return [record.level for record in self.vertebrae]


@dataclass(frozen=True)
class DiscRecord:
    """One intervertebral disc: Spinal Cord Toolbox number, RAS position (mm), confidence 0..1."""

    number: int
    position_ras: tuple[float, float, float]
    confidence: float

    @property
    def name(self) -> str:
        return disc_name(self.number)

    def to_dict(self) -> dict:
        """The entry of ``discs.json``: name, number, position_ras as for a vertebra, then the confidence."""
        return {
            "name": self.name,
            "number": self.number,
            "position_ras": [round(float(x), 3) for x in self.position_ras],
            "confidence": round(float(self.confidence), 4),
        }


@dataclass(frozen=True)
class DiscNaming:
    """Where the disc names were counted from: an anchor in view ("C2", "sacrum", "C2 and sacrum") or none, in
    which case the names are the network's guess of the levels."""

    anchor: str | None = None
    # The mean confidence of the discs' names (each disc's ``confidence`` in discs.json; halved when unanchored);
    # None: no discs.
    confidence: float | None = None

    @property
    def anchored(self) -> bool:
        return self.anchor is not None

    @property
    def summary(self) -> str:
        """A short phrase for a status line (the warnings of the result say more)."""
        text = f"names counted from {self.anchor}" if self.anchored else "unanchored: no C2 or sacrum in view"
        return text + (f", confidence {self.confidence:.2f}" if self.confidence is not None else "")

    def to_dict(self) -> dict:
        """The ``naming`` object of ``discs.json`` (the same keys as in ``vertebrae.json``; the confidence is each
        disc's own ``confidence``)."""
        return {"anchor": self.anchor, "anchored": self.anchored}


@dataclass(frozen=True)
class DiscsResult:
    """Discs found in an MRI, head to foot, the 2D slab they were found on (for pictures) and warnings about
    the input (see :func:`spineseg.checks.check_input`)."""

    discs: list[DiscRecord] = field(default_factory=list)
    slab: np.ndarray | None = None
    slab_to_ras: np.ndarray | None = None  # 3x3: (row, column, 1) of the slab image -> RAS mm
    warnings: list[str] = field(default_factory=list)
    naming: DiscNaming = field(default_factory=DiscNaming)

    def table(self) -> dict:
        """The task's part of ``discs.json``: how the names were fixed (``naming``: {"anchor": "C2", "sacrum",
        ... or null, "anchored": bool}) and one record per disc."""
        return {"naming": self.naming.to_dict(), "discs": [disc.to_dict() for disc in self.discs]}

    @staticmethod
    def naming_summary(naming: dict) -> tuple[str, bool]:
        """How a run's names were fixed, read back from its JSON's ``naming``: a phrase and whether anchored."""
        record = DiscNaming(naming.get("anchor") if naming.get("anchored") else None)
        return record.summary, record.anchored

    @property
    def numbers(self) -> list[int]:
        return [record.number for record in self.discs]
