"""Training patches for the iterative FCN, with the published sampling rules.

Each case is a CT in the working frame (k axis towards the head) with its
instance labels. Traversal goes head to foot, so for a chosen vertebra the
instance memory holds every vertebra above it. One patch in
``empty_every`` has no target: the memory holds all vertebrae. A target is
"complete" when the whole vertebra lies in the scan and at least 98 % of it
lies in the patch. Augmentation: smooth elastic warps, scan ends blanked,
left-right mirroring, blur, intensity scale/shift and noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..anatomy import level_to_position
from .loss import boundary_weights
from .patches import OUTSIDE_VALUE, extract_patch, normalise_ct

__all__ = ["TrainingCase", "TrainingPatch", "PatchSampler", "SamplerConfig"]


@dataclass
class TrainingCase:
    """A normalised CT (working frame) and its VerSe label map of the same shape."""

    image: np.ndarray
    labels: np.ndarray
    spacing_mm: float

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


class PatchSampler:
    """Draws random :class:`TrainingPatch` es from a list of cases."""

    def __init__(self, cases: list[TrainingCase], config: SamplerConfig, rng: np.random.Generator) -> None:
        cases = [case for case in cases if case.levels]
        if not cases:
            raise ValueError("the sampler needs at least one case with a labelled vertebra")
        self.cases = cases
        self.config = config
        self.rng = rng

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

    def sample(self) -> TrainingPatch:
        cfg = self.config
        case = self.cases[self.rng.integers(len(self.cases))]
        size = cfg.patch_size
        empty = self.rng.integers(cfg.empty_every) == 0
        level = case.levels[self.rng.integers(len(case.levels))]
        centre = self._centre_for(case, level)
        corner = np.round(centre - size / 2).astype(int)
        image = extract_patch(case.image, corner, size, OUTSIDE_VALUE)
        labels = extract_patch(case.labels, corner, size, 0)

        if empty:
            memory = labels > 0
            target = np.zeros_like(memory)
        else:
            above = [other for other in case.levels if level_to_position(other) < level_to_position(level)]
            memory = np.isin(labels, above)
            target = labels == level

        if self.rng.random() < cfg.elastic_probability:
            image, memory, target = self._deform(image, memory, target, case.spacing_mm)
        if self.rng.random() < cfg.blank_probability:
            # A scan that ends inside the patch: blank one end along the head-foot axis.
            cut = int(self.rng.integers(size // 8, size // 2))
            region = np.s_[:, :, :cut] if self.rng.random() < 0.5 else np.s_[:, :, size - cut:]
            image[region] = OUTSIDE_VALUE
            memory[region] = False
            target[region] = False
        if self.rng.random() < cfg.flip_probability:  # left-right mirror keeps anatomy valid
            image, memory, target = image[::-1], memory[::-1], target[::-1]

        has_target = bool(target.any())
        complete = 0.0
        if has_target:
            whole = len(case.voxels[level])
            complete = float(not case.cut_by_scan[level] and target.sum() >= cfg.complete_fraction * whole)
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
        )

    def _deform(
        self, image: np.ndarray, memory: np.ndarray, target: np.ndarray, spacing_mm: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Warp the patch by a smooth random displacement field (same field for image and masks).

        Displacements peak near ``elastic_displacement_mm`` and vary over about
        ``elastic_smoothness_mm``, so vertebrae bend and bulge but keep their topology.
        """
        cfg = self.config
        shape = image.shape
        sigma = cfg.elastic_smoothness_mm / spacing_mm
        field = []
        for _ in range(3):
            noise = ndimage.gaussian_filter(self.rng.standard_normal(shape), sigma, mode="wrap")
            scale = cfg.elastic_displacement_mm / spacing_mm / (np.abs(noise).max() + 1e-8)
            field.append(noise * scale)
        grid = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
        coordinates = [axis + shift for axis, shift in zip(grid, field)]
        warped_image = ndimage.map_coordinates(image, coordinates, order=1, mode="nearest").astype(np.float32)
        warped_memory = ndimage.map_coordinates(memory.astype(np.uint8), coordinates, order=0, mode="nearest") > 0
        warped_target = ndimage.map_coordinates(target.astype(np.uint8), coordinates, order=0, mode="nearest") > 0
        return warped_image, warped_memory, warped_target

    def _augment_intensity(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        inside = image > OUTSIDE_VALUE + 0.5
        if self.rng.random() < cfg.blur_probability:
            image = ndimage.gaussian_filter(image, sigma=self.rng.uniform(0.3, 0.8))
        image = image * (1.0 + self.rng.uniform(-cfg.intensity_scale, cfg.intensity_scale))
        image = image + self.rng.uniform(-cfg.intensity_shift, cfg.intensity_shift)
        image = image + self.rng.normal(0.0, self.rng.uniform(0, cfg.noise_std), image.shape).astype(np.float32)
        return np.where(inside, image, OUTSIDE_VALUE).astype(np.float32)
