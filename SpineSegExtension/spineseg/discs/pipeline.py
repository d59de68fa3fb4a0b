"""Disc labelling of one MRI: slab -> network -> chain decoding -> left-right refinement -> DiscsResult."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from ..checks import check_input
from ..choices import DeviceChoice, Task
from ..progress import ProgressCallback, no_progress
from ..results import DiscNaming, DiscRecord, DiscsResult
from ..volume import Volume
from .decode import UNANCHORED_WARNING, DecodeSettings, decode_chain
from .slab import extract_slab, refine_lateral

if TYPE_CHECKING:  # torch loads with the model, not with this module
    from ..networks.disc_model import DiscModel

__all__ = ["label_discs"]

log = logging.getLogger(__name__)

def label_discs(volume: Volume, model: "DiscModel | str | os.PathLike | None" = None,
                device: DeviceChoice | str = DeviceChoice.AUTO,
                progress: ProgressCallback = no_progress,
                settings: DecodeSettings = DecodeSettings(), force_modality: bool = False) -> DiscsResult:
    """Find and name the intervertebral discs of one MRI.

    Args:
        volume: T1w or T2w MRI, any orientation and spacing.
        model: a loaded :class:`DiscModel`, a bundled model's name, a manifest or weights path,
            or None (the bundled default).
        device: "auto" (GPU when available), "cpu" or "cuda".
        progress: callback (fraction, message); may raise CancelledError.
        settings: decoder settings.
        force_modality: run even if the intensities say this is a CT.

    Returns:
        DiscsResult with discs head to foot (RAS mm), the slab, slab_to_ras, the input's warnings (and one
        when no anchor was in view) and how the names were counted (``naming``).

    Raises:
        InputError: the image cannot be used (see :func:`spineseg.checks.check_input`).
    """
    warnings = check_input(volume, Task.DISCS, force_modality)
    progress(0.0, "loading the disc model")
    from ..model_store import load_model

    model = load_model(Task.DISCS, model, device)
    progress(0.1, "cutting the mid-sagittal slab")
    slab = extract_slab(volume, size=model.settings.input_size, thickness_mm=model.settings.slab_thickness_mm)
    progress(0.3, "running the disc network")
    heatmaps = model.heatmaps(slab.image)
    progress(0.8, "labelling the discs")
    decoded = decode_chain(heatmaps, slab.slab_to_ras, slab.pixel_mm, model.settings.output_stride, settings,
                           inside=slab.inside)
    discs = decoded.discs
    if discs and not decoded.anchored:
        warnings = [*warnings, UNANCHORED_WARNING]
    if discs:
        # The slab fixes front-back and head-foot; find each disc's own left-right centre in 3D.
        refined = refine_lateral(volume, np.array([d.position_ras for d in discs]))
        discs = [DiscRecord(d.number, tuple(float(x) for x in p), d.confidence) for d, p in zip(discs, refined)]
    log.info("found %d discs: %s (%s)", len(discs), ", ".join(d.name for d in discs),
             f"counted from {decoded.anchor}" if decoded.anchored else "unanchored")
    progress(1.0, f"found {len(discs)} discs")
    return DiscsResult(discs=discs, slab=slab.image, slab_to_ras=slab.slab_to_ras, warnings=warnings,
                       naming=DiscNaming(decoded.anchor))
