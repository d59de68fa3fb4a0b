"""Disc labelling of one MRI: slab -> network -> chain decoding -> left-right refinement -> DiscsResult.

Checkpoints are safetensors (tensors only, nothing runs on load) plus a JSON
manifest entry with the architecture, the input size and the file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..devices import resolve_device
from ..errors import InputError, ModelError
from ..model_store import BUNDLED_MODELS_DIR
from ..progress import ProgressCallback, no_progress
from ..results import DiscRecord, DiscsResult
from ..volume import Volume
from .decode import DecodeSettings, decode_heatmaps
from .network import AttentionHourglassNet, HourglassConfig
from .slab import extract_slab, refine_lateral, volume_ras_bounds

__all__ = ["DiscModel", "label_discs", "BUNDLED_MODEL", "check_volume", "MIN_SPINE_EXTENT_MM"]

log = logging.getLogger(__name__)

BUNDLED_MODEL = BUNDLED_MODELS_DIR / "discs-mri-phantom-v2.safetensors"

# Two discs are at least ~15 mm apart; an image shorter than this cannot show a labelled spine.
MIN_SPINE_EXTENT_MM = 30.0


class DiscModel:
    """A loaded disc network with its manifest (input size, stride, slab thickness)."""

    def __init__(self, network: AttentionHourglassNet, manifest: dict) -> None:
        self.network = network.eval()
        self.manifest = manifest
        self.input_size = int(manifest.get("input_size", [256, 256])[0])
        self.stride = int(manifest.get("output_stride", 4))
        self.slab_thickness_mm = float(manifest.get("slab_thickness_mm", 6.0))
        self.name = str(manifest.get("name", "unnamed"))

    @classmethod
    def from_file(cls, path: str | Path | None = None, manifest_path: str | Path | None = None,
                  check_hash: bool = True) -> "DiscModel":
        """Load weights (safetensors) and their manifest (``.json`` beside them by default).

        ``path=None`` loads the bundled phantom-trained model.

        Raises:
            ModelError: a file is missing, the hash differs, or the weights do
                not fit the architecture the manifest names.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = BUNDLED_MODEL if path is None else Path(path)
        manifest_path = path.with_suffix(".json") if manifest_path is None else Path(manifest_path)
        if not path.is_file():
            raise ModelError(f"disc model weights not found: {path}")
        if not manifest_path.is_file():
            raise ModelError(f"disc model manifest not found: {manifest_path} (expected next to the weights)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ModelError(f"cannot read the model manifest {manifest_path}: {error}") from None
        if manifest.get("task") != "discs":
            raise ModelError(f"{manifest_path} is a model for task {manifest.get('task')!r}, not 'discs'")
        if check_hash and manifest.get("sha256"):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != manifest["sha256"]:
                raise ModelError(f"{path} does not match its manifest (sha256 {digest[:12]}... expected "
                                 f"{manifest['sha256'][:12]}...); the file is damaged or was replaced")
        settings = {k: v for k, v in manifest.get("architecture", {}).items() if k != "type"}
        try:
            config = HourglassConfig(**settings)
            network = AttentionHourglassNet(config)
            network.load_state_dict(load_file(str(path)))
        except (TypeError, ValueError, RuntimeError, SafetensorError) as error:
            raise ModelError(f"{path} does not fit the architecture in its manifest: {str(error).splitlines()[0]}") from None
        return cls(network, manifest)

    def heatmaps(self, image: np.ndarray, device: str = "cpu") -> np.ndarray:
        """(N_CHANNELS, h, w) heatmaps of the last stack for one (size, size) slab."""
        self.network.to(device)
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
            return self.network(tensor)[-1][0].float().cpu().numpy()


def check_volume(volume: Volume) -> None:
    """Raise InputError if the image cannot hold a labelled spine (2D, or too small)."""
    if sum(n > 1 for n in volume.shape) < 3:
        raise InputError(f"the image is 2D (size {volume.shape} voxels); disc labelling needs a 3D MRI")
    lower, upper = volume_ras_bounds(volume)
    extent = upper - lower
    if max(extent[1], extent[2]) < MIN_SPINE_EXTENT_MM:
        raise InputError(f"the image is too small to hold a spine: {np.round(extent, 1).tolist()} mm "
                         f"(R, A, S); it must span at least {MIN_SPINE_EXTENT_MM:.0f} mm head to foot")


def label_discs(volume: Volume, model: DiscModel | None = None, device: str = "auto",
                progress: ProgressCallback = no_progress,
                settings: DecodeSettings = DecodeSettings()) -> DiscsResult:
    """Find and name the intervertebral discs of one MRI.

    Args:
        volume: T1w or T2w MRI, any orientation and spacing.
        model: a loaded :class:`DiscModel`; the bundled one when None.
        device: "auto" (GPU when available), "cpu" or "cuda".
        progress: callback (fraction, message); may raise CancelledError.
        settings: decoder settings.

    Returns:
        DiscsResult with discs head to foot (RAS mm), the slab and slab_to_ras.
    """
    check_volume(volume)
    device = str(resolve_device(device))
    progress(0.0, "loading the disc model")
    model = DiscModel.from_file(None) if model is None else model
    progress(0.1, "cutting the mid-sagittal slab")
    slab = extract_slab(volume, size=model.input_size, thickness_mm=model.slab_thickness_mm)
    progress(0.3, "running the disc network")
    heatmaps = model.heatmaps(slab.image, device)
    progress(0.8, "labelling the discs")
    discs = decode_heatmaps(heatmaps, slab.slab_to_ras, slab.pixel_mm, model.stride, settings)
    if discs:
        # The slab fixes front-back and head-foot; find each disc's own left-right centre in 3D.
        refined = refine_lateral(volume, np.array([d.position_ras for d in discs]))
        discs = [DiscRecord(d.number, tuple(float(x) for x in p), d.confidence) for d, p in zip(discs, refined)]
    log.info("found %d discs: %s", len(discs), ", ".join(d.name for d in discs))
    progress(1.0, f"found {len(discs)} discs")
    return DiscsResult(discs=discs, slab=slab.image, slab_to_ras=slab.slab_to_ras)
