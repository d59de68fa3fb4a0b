"""Intervertebral disc labelling in MRI (stacked hourglass with multi-level attention).

Entry points: :func:`label_discs` (Volume in, DiscsResult out), :func:`run_discs`
(file in, discs.mrk.json / discs.json / discs.png out) and :class:`DiscModel`.
"""

from __future__ import annotations

from .outputs import run_discs
from .pipeline import DiscModel, label_discs

__all__ = ["DiscModel", "label_discs", "run_discs"]
