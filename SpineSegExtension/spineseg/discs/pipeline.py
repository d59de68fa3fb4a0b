"""Disc labelling of one MRI: slab -> network -> chain decoding -> left-right refinement -> DiscsResult."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from ..choices import DeviceChoice, Task
from ..errors import InputError
from ..progress import ProgressCallback, no_progress
from ..results import DiscRecord, DiscsResult
from ..volume import Volume
from .decode import DecodeSettings, decode_heatmaps
from .slab import extract_slab, refine_lateral, volume_ras_bounds

if TYPE_CHECKING:  # torch loads with the model, not with this module
    from ..networks.disc_model import DiscModel

__all__ = ["label_discs", "check_volume", "MIN_SPINE_EXTENT_MM"]

log = logging.getLogger(__name__)

# Two discs are at least ~15 mm apart; an image shorter than this cannot show a labelled spine.
MIN_SPINE_EXTENT_MM = 30.0


def check_volume(volume: Volume) -> None:
    """Raise InputError if the image cannot hold a labelled spine (2D, or too small)."""
    if sum(n > 1 for n in volume.shape) < 3:
        raise InputError(f"the image is 2D (size {volume.shape} voxels); disc labelling needs a 3D MRI")
    lower, upper = volume_ras_bounds(volume)
    extent = upper - lower
    if max(extent[1], extent[2]) < MIN_SPINE_EXTENT_MM:
        raise InputError(f"the image is too small to hold a spine: {np.round(extent, 1).tolist()} mm "
                         f"(R, A, S); it must span at least {MIN_SPINE_EXTENT_MM:.0f} mm head to foot")


def label_discs(volume: Volume, model: "DiscModel | str | os.PathLike | None" = None,
                device: DeviceChoice | str = DeviceChoice.AUTO,
                progress: ProgressCallback = no_progress,
                settings: DecodeSettings = DecodeSettings()) -> DiscsResult:
    """Find and name the intervertebral discs of one MRI.

    Args:
        volume: T1w or T2w MRI, any orientation and spacing.
        model: a loaded :class:`DiscModel`, a bundled model's name, a manifest or weights path,
            or None (the bundled default).
        device: "auto" (GPU when available), "cpu" or "cuda".
        progress: callback (fraction, message); may raise CancelledError.
        settings: decoder settings.

    Returns:
        DiscsResult with discs head to foot (RAS mm), the slab and slab_to_ras.
    """
    check_volume(volume)
    progress(0.0, "loading the disc model")
    from ..model_store import load_model

    model = load_model(Task.DISCS, model, device)
    progress(0.1, "cutting the mid-sagittal slab")
    slab = extract_slab(volume, size=model.settings.input_size, thickness_mm=model.settings.slab_thickness_mm)
    progress(0.3, "running the disc network")
    heatmaps = model.heatmaps(slab.image)
    progress(0.8, "labelling the discs")
    discs = decode_heatmaps(heatmaps, slab.slab_to_ras, slab.pixel_mm, model.settings.output_stride, settings)
    if discs:
        # The slab fixes front-back and head-foot; find each disc's own left-right centre in 3D.
        refined = refine_lateral(volume, np.array([d.position_ras for d in discs]))
        discs = [DiscRecord(d.number, tuple(float(x) for x in p), d.confidence) for d, p in zip(discs, refined)]
    log.info("found %d discs: %s", len(discs), ", ".join(d.name for d in discs))
    progress(1.0, f"found {len(discs)} discs")
    return DiscsResult(discs=discs, slab=slab.image, slab_to_ras=slab.slab_to_ras)
