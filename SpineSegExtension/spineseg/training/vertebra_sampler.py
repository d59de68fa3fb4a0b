"""Training patches for the iterative FCN, with the published sampling rules.

Each case is a CT in the working frame (k axis towards the head) with its
instance labels. Traversal goes head to foot, so for a chosen vertebra the
instance memory holds every vertebra above it. One patch in
``empty_every`` has no target: the memory holds all vertebrae. A target is
"complete" when the whole vertebra lies in the scan and at least 98 % of it
lies in the patch. A share of empty patches (``background_probability``)
lies anywhere in the scan, as the walk's search does. Augmentation: smooth elastic warps and scaling, scan ends
blanked (or both, as in a scan of a few slices), left-right mirroring, blur, low-resolution simulation, gamma,
intensity scale/shift and noise. A case that carries a map of generation
classes (a phantom) can have each patch drawn anew from it with a random
appearance (``synthetic_probability``, see :mod:`spineseg.phantoms.synth`).
When real CTs (cases without generation classes) and phantoms train together,
``real_share`` of the patches come from the real ones; both get the same augmentation. With
``real_levels`` off, the real patches leave the level head to the phantoms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from ..anatomy import level_to_position
from .vertebra_loss import boundary_weights
from ..vertebrae.patches import OUTSIDE_VALUE, extract_patch, normalise_ct

__all__ = ["TrainingCase", "TrainingPatch", "PatchSampler", "SamplerConfig", "Appearance", "OUTSIDE_CLASS"]

# Draws a Hounsfield image of a patch of generation classes: (classes, spacing mm, rng) -> float32 HU.
Appearance = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
OUTSIDE_CLASS = 255  # generation class of voxels outside the scan (as spineseg.phantoms.synth)


@dataclass
class TrainingCase:
    """A normalised CT (working frame) and its VerSe label map of the same shape.

    ``tissue``, when given (phantoms), holds the generation classes the image was painted from; ``name`` says
    where the case came from (a real CT's file name, or empty).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing_mm: float
    tissue: np.ndarray | None = None
    name: str = ""

    @classmethod
    def from_hounsfield(cls, hounsfield: np.ndarray, labels: np.ndarray, spacing_mm: float) -> "TrainingCase":
        if hounsfield.shape != labels.shape:
            raise ValueError(f"image shape {hounsfield.shape} differs from label shape {labels.shape}")
        return cls(normalise_ct(hounsfield), labels.astype(np.uint8), spacing_mm)

    def __post_init__(self) -> None:
        present = [int(v) for v in np.unique(self.labels) if v != 0]
        # Head-to-foot order = increasing anatomical position.
        self.levels = sorted(present, key=level_to_position)
        self.voxels = {level: np.argwhere(self.labels == level) for level in self.levels}
        border = np.zeros(self.labels.shape, dtype=bool)
        border[[0, -1], :, :] = border[:, [0, -1], :] = border[:, :, [0, -1]] = True
        touching = set(np.unique(self.labels[border]).tolist())
        self.cut_by_scan = {level: level in touching for level in self.levels}


@dataclass
class TrainingPatch:
    """Network input (2 x D x H x W), target mask, weights, and head targets."""

    inputs: np.ndarray
    target: np.ndarray
    weights: np.ndarray
    complete: float
    position: float
    has_target: bool
    case: str = ""  # the name of the case it was cut from
    level_known: bool = True  # False: the level head does not learn from this patch (see PatchSampler)


@dataclass(frozen=True)
class SamplerConfig:
    """Sampling and augmentation settings (sizes in voxels, volumes in mm^3)."""

    patch_size: int = 40
    empty_every: int = 4
    min_target_mm3: float = 1000.0
    complete_fraction: float = 0.98
    blank_probability: float = 0.15
    flip_probability: float = 0.5
    noise_std: float = 0.03
    intensity_shift: float = 0.03
    intensity_scale: float = 0.05
    blur_probability: float = 0.2
    elastic_probability: float = 0.3
    elastic_displacement_mm: float = 4.0
    elastic_smoothness_mm: float = 20.0
    scale_range: float = 0.0  # isotropic zoom by 1 +- this, with the elastic warp
    lowres_probability: float = 0.0  # downsample by up to 2 and back (thick slices, coarse scans)
    gamma_probability: float = 0.0  # a gamma curve of 0.7-1.5 on the patch's intensity range
    synthetic_probability: float = 0.0  # patches of cases with generation classes drawn with a new appearance
    background_probability: float = 0.0  # empty patches centred anywhere in the scan, not only near the spine
    realistic_probability: float = 0.6  # synthetic patches with realistic intensities (the rest: random per class)
    memory_error_probability: float = 0.0  # patches whose memory is wrong by part of a vertebra (see _misplace_memory)
    thin_scan_probability: float = 0.0  # patches of a scan only 8-20 voxels tall around the target (see _thin_scan)


class PatchSampler:
    """Draws random :class:`TrainingPatch` es from a list of cases."""

    def __init__(self, cases: list[TrainingCase], config: SamplerConfig, rng: np.random.Generator,
                 appearance: Appearance | None = None, real_share: float = 0.0, real_levels: bool = True) -> None:
        cases = [case for case in cases if case.levels]
        if not cases:
            raise ValueError("the sampler needs at least one case with a labelled vertebra")
        if not 0.0 <= real_share <= 1.0:
            raise ValueError(f"real_share must be in [0, 1], got {real_share}")
        self.cases = cases
        # Real CTs and phantoms as two pools, drawn at ``real_share`` when both are present.
        self.real_cases = [case for case in cases if case.tissue is None]
        self.phantom_cases = [case for case in cases if case.tissue is not None]
        self.real_share = real_share if self.real_cases and self.phantom_cases else None
        # Without ``real_levels``, real cases mixed with phantoms teach masks and completeness, not levels.
        self.real_levels = real_levels or self.real_share is None
        self.config = config
        self.rng = rng
        self.appearance = appearance
        if config.synthetic_probability > 0 and appearance is None:
            raise ValueError("sampler.synthetic_probability > 0 needs an appearance model for the generation classes")

    def _centre_for(self, case: TrainingCase, level: int) -> np.ndarray:
        """A centre such that at least ``min_target_mm3`` of the vertebra is inside the patch."""
        size = self.config.patch_size
        voxels = case.voxels[level]
        needed = min(self.config.min_target_mm3 / case.spacing_mm**3, 0.5 * len(voxels))
        for _ in range(10):
            centre = voxels[self.rng.integers(len(voxels))] + self.rng.uniform(-0.4, 0.4, 3) * size
            corner = np.round(centre - size / 2).astype(int)
            inside = np.all((voxels >= corner) & (voxels < corner + size), axis=1).sum()
            if inside >= needed:
                return centre
        return voxels.mean(axis=0)

    def _pick_case(self) -> TrainingCase:
        pool = self.cases
        if self.real_share is not None:
            pool = self.real_cases if self.rng.random() < self.real_share else self.phantom_cases
        return pool[self.rng.integers(len(pool))]

    def sample(self) -> TrainingPatch:
        cfg = self.config
        case = self._pick_case()
        size = cfg.patch_size
        background = cfg.background_probability > 0 and self.rng.random() < cfg.background_probability
        empty = background or self.rng.integers(cfg.empty_every) == 0
        level = case.levels[self.rng.integers(len(case.levels))]
        if background:  # the walk's search sees the whole scan: bowel, vessels, table, arms
            centre = self.rng.uniform(0, 1, 3) * np.asarray(case.image.shape)
        else:
            centre = self._centre_for(case, level)
        corner = np.round(centre - size / 2).astype(int)
        image = self._image_patch(case, corner)
        labels = extract_patch(case.labels, corner, size, 0)

        if empty:
            memory = labels > 0
            target = np.zeros_like(memory)
        else:
            above = [other for other in case.levels if level_to_position(other) < level_to_position(level)]
            memory = np.isin(labels, above)
            target = labels == level

        volume_factor = 1.0
        if self.rng.random() < cfg.elastic_probability:
            image, memory, target, volume_factor = self._deform(image, memory, target, case.spacing_mm)
        if self.rng.random() < cfg.blank_probability:
            # A scan that ends inside the patch: blank one end along the head-foot axis.
            cut = int(self.rng.integers(size // 8, size // 2))
            region = np.s_[:, :, :cut] if self.rng.random() < 0.5 else np.s_[:, :, size - cut:]
            image[region] = OUTSIDE_VALUE
            memory[region] = False
            target[region] = False
        if cfg.thin_scan_probability > 0 and self.rng.random() < cfg.thin_scan_probability:
            self._thin_scan(image, memory, target)
        if self.rng.random() < cfg.flip_probability:  # left-right mirror keeps anatomy valid
            image, memory, target = image[::-1], memory[::-1], target[::-1]

        has_target = bool(target.any())
        complete = 0.0
        if has_target:
            whole = len(case.voxels[level]) * volume_factor
            complete = float(not case.cut_by_scan[level] and target.sum() >= cfg.complete_fraction * whole)
            if cfg.memory_error_probability > 0 and self.rng.random() < cfg.memory_error_probability:
                memory, target = self._misplace_memory(memory, target)
                has_target = bool(target.any())
        image = self._augment_intensity(image)
        weights = boundary_weights(target, case.spacing_mm)
        inputs = np.stack([image, memory.astype(np.float32)])
        return TrainingPatch(
            inputs=np.ascontiguousarray(inputs),
            target=np.ascontiguousarray(target[np.newaxis].astype(np.float32)),
            weights=np.ascontiguousarray(weights[np.newaxis]),
            complete=complete,
            position=float(level_to_position(level)) if has_target else 0.0,
            has_target=has_target,
            case=case.name,
            level_known=self.real_levels or case.tissue is not None,
        )

    def _thin_scan(self, image: np.ndarray, memory: np.ndarray, target: np.ndarray) -> None:
        """Blank both ends of the patch in place, as a scan of a few slices (a 40 mm DICOM series) shows it.

        The visible slab is 8-20 voxels tall and crosses the target's rows (or the patch's middle when the
        patch has no target), so the network learns to find a vertebra that both scan ends cut.
        """
        size = target.shape[2]
        height = int(self.rng.integers(8, 21))
        rows = np.flatnonzero(target.any(axis=(0, 1)))
        low, high = (rows[0], rows[-1]) if rows.size else (size // 2, size // 2)
        start = int(np.clip(self.rng.integers(low - height + 1, high + 1), 0, size - height))
        for array, outside in ((image, OUTSIDE_VALUE), (memory, False), (target, False)):
            array[:, :, :start] = outside
            array[:, :, start + height:] = outside

    def _misplace_memory(self, memory: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The memory a walk that erred on the vertebra above leaves, and what is then left to segment.

        On real scans a vertebra's outline can stop short of its lower endplate or run on into the
        top of the next body; the next step then sees that error in its memory. Trained only on exact
        memory, the network then fills out a vertebra of the usual size and the error moves down the
        spine level by level. Here either the memory takes a slab of 10-50 % of the target's height
        from its top (the target becomes the rest of it), or the memory loses a slab of that height from
        the bottom of what it holds (the target stays the whole vertebra, not the leftover above it). The
        completeness target stays that of the whole vertebra.
        """
        head_foot = np.arange(target.shape[2])[np.newaxis, np.newaxis, :]  # k grows towards the head
        target_rows = np.flatnonzero(target.any(axis=(0, 1)))
        slab = self.rng.uniform(0.1, 0.5) * (target_rows[-1] + 1 - target_rows[0])
        if self.rng.random() < 0.5:
            taken = target & (head_foot >= target_rows[-1] + 1 - slab)
            return memory | taken, target & ~taken
        memory_rows = np.flatnonzero(memory.any(axis=(0, 1)))
        if memory_rows.size == 0:
            return memory, target
        return memory & ~(head_foot < memory_rows[0] + slab), target

    def _image_patch(self, case: TrainingCase, corner: np.ndarray) -> np.ndarray:
        """The normalised image patch: the case's own, or one drawn anew from its generation classes."""
        size = self.config.patch_size
        if case.tissue is None or self.rng.random() >= self.config.synthetic_probability:
            return extract_patch(case.image, corner, size, OUTSIDE_VALUE)
        classes = extract_patch(case.tissue, corner, size, OUTSIDE_CLASS)
        image = normalise_ct(self.appearance(classes, case.spacing_mm, self.rng))
        image[classes == OUTSIDE_CLASS] = OUTSIDE_VALUE
        return image

    def _deform(
        self, image: np.ndarray, memory: np.ndarray, target: np.ndarray, spacing_mm: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Warp the patch by a smooth random displacement field and zoom (same for image and masks).

        Displacements peak near ``elastic_displacement_mm`` and vary over about
        ``elastic_smoothness_mm``, so vertebrae bend and bulge but keep their topology.
        Returns the warped arrays and the factor by which the zoom scales volumes.
        """
        cfg = self.config
        shape = image.shape
        sigma = cfg.elastic_smoothness_mm / spacing_mm
        field = []
        for _ in range(3):
            noise = ndimage.gaussian_filter(self.rng.standard_normal(shape), sigma, mode="wrap")
            scale = cfg.elastic_displacement_mm / spacing_mm / (np.abs(noise).max() + 1e-8)
            field.append(noise * scale)
        zoom = 1.0 + self.rng.uniform(-cfg.scale_range, cfg.scale_range)
        centre = (np.asarray(shape) - 1) / 2.0
        grid = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
        coordinates = [c + (axis - c) / zoom + shift for axis, shift, c in zip(grid, field, centre)]
        warped_image = ndimage.map_coordinates(image, coordinates, order=1, mode="nearest").astype(np.float32)
        warped_memory = ndimage.map_coordinates(memory.astype(np.uint8), coordinates, order=0, mode="nearest") > 0
        warped_target = ndimage.map_coordinates(target.astype(np.uint8), coordinates, order=0, mode="nearest") > 0
        return warped_image, warped_memory, warped_target, zoom**3

    def _augment_intensity(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        inside = image > OUTSIDE_VALUE + 0.5
        if self.rng.random() < cfg.blur_probability:
            image = ndimage.gaussian_filter(image, sigma=self.rng.uniform(0.3, 0.8))
        if self.rng.random() < cfg.lowres_probability:
            factor = self.rng.uniform(1.2, 2.0)
            small = ndimage.zoom(image, 1.0 / factor, order=1)
            image = ndimage.zoom(small, np.asarray(image.shape) / np.asarray(small.shape), order=1)
        if self.rng.random() < cfg.gamma_probability and inside.any():
            low, high = float(image[inside].min()), float(image[inside].max())
            unit = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
            image = low + (high - low) * unit ** self.rng.uniform(0.7, 1.5)
        image = image * (1.0 + self.rng.uniform(-cfg.intensity_scale, cfg.intensity_scale))
        image = image + self.rng.uniform(-cfg.intensity_shift, cfg.intensity_shift)
        image = image + self.rng.normal(0.0, self.rng.uniform(0, cfg.noise_std), image.shape).astype(np.float32)
        return np.where(inside, image, OUTSIDE_VALUE).astype(np.float32)
