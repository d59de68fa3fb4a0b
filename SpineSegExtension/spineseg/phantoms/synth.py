"""Training images from label maps with a random appearance (SynthSeg-style), for any modality.

Billot et al., "SynthSeg", Medical Image Analysis 2023: a network trained on
images drawn from label maps with a new random intensity per class, blur,
bias and noise for every sample learns shape, not one scanner's look, and
carries over to real scans. Here the label map is a map of *generation
classes* (finer than the labels a network learns: cortex and marrow, disc
annulus and nucleus, each muscle, ...), and an :class:`AppearanceModel` says
how a modality draws them:

* with probability ``realistic_probability`` each class gets a mean from its
  realistic prior (for CT: Hounsfield ranges from osteoporotic to dense
  bone), otherwise a mean anywhere in ``random_mean`` (unseen contrasts);
* within-class texture (spatially correlated for textured classes such as
  trabecular bone) and smooth low-frequency blobs inside each class;
* the acquisition: a reconstruction kernel (Gaussian blur, sometimes
  sharpened, which rings at edges), the slice thickness along the axial
  axis (partial volume), a multiplicative bias field, correlated noise.

The output stays on the class map's grid, so labels and points drawn with the
map stay aligned with the image by construction. The modality-specific
priors live beside their phantoms (:mod:`.ct_appearance` for CT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["ClassPrior", "AppearanceModel", "OUTSIDE_CLASS", "synthesize"]

OUTSIDE_CLASS = 255  # voxels outside the scan: left at the lower end of the value range

_F = np.float32


@dataclass(frozen=True)
class ClassPrior:
    """Realistic range of one class's mean intensity and of its within-class texture (standard deviation)."""

    mean: tuple[float, float]
    texture: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class AppearanceModel:
    """How one modality draws a class map; every range is (low, high) of a uniform draw."""

    priors: Mapping[int, ClassPrior]
    random_mean: tuple[float, float]
    random_texture: tuple[float, float]
    value_range: tuple[float, float]
    realistic_probability: float = 0.5
    textured: frozenset[int] = field(default_factory=frozenset)  # texture correlated over about a voxel
    blob_amplitude: float = 0.0  # largest amplitude of the smooth blobs inside a class
    blob_size_mm: tuple[float, float] = (10.0, 30.0)
    kernel_mm: tuple[float, float] = (0.3, 1.0)  # in-plane blur sigma of the reconstruction kernel
    sharpen_probability: float = 0.0
    sharpen_amount: tuple[float, float] = (0.3, 1.0)
    slice_thickness_mm: tuple[float, float] = (0.5, 5.0)
    bias_strength: float = 0.0  # largest log-amplitude of the multiplicative bias field
    noise: tuple[float, float] = (0.0, 0.0)  # standard deviation of the added noise
    noise_correlation_voxels: tuple[float, float] = (0.0, 1.0)


def _smooth_field(shape: Sequence[int], sigma_voxels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field of unit peak amplitude.

    Drawn on a grid a third of ``sigma_voxels`` apart and interpolated: the same smoothness at a small
    fraction of the cost of filtering full-resolution noise with wide kernels.
    """
    shape = np.asarray(shape)
    step = np.maximum(np.floor(np.broadcast_to(sigma_voxels, shape.shape) / 3.0), 1.0)
    coarse_shape = (np.ceil((shape - 1) / step) + 1).astype(int)
    coarse = ndimage.gaussian_filter(rng.standard_normal(tuple(coarse_shape), dtype=_F), sigma_voxels / step,
                                     mode="reflect")
    field = coarse
    for axis, (size, spacing) in enumerate(zip(shape, step)):  # separable linear interpolation
        position = np.arange(size) / spacing
        low = np.minimum(np.floor(position).astype(int), field.shape[axis] - 1)
        high = np.minimum(low + 1, field.shape[axis] - 1)
        weight = (position - low).astype(_F).reshape([-1 if a == axis else 1 for a in range(field.ndim)])
        field = np.take(field, low, axis=axis) * (1 - weight) + np.take(field, high, axis=axis) * weight
    return field / (np.abs(field).max() + 1e-6)


def _class_means(present: np.ndarray, model: AppearanceModel,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mean and texture of every class present (realistic priors or anywhere in the random ranges)."""
    realistic = rng.random() < model.realistic_probability
    means = np.zeros(256, dtype=_F)
    textures = np.zeros(256, dtype=_F)
    for value in present:
        prior = model.priors.get(int(value))
        if realistic and prior is not None:
            means[value] = rng.uniform(*prior.mean)
            textures[value] = rng.uniform(*prior.texture)
        else:
            means[value] = rng.uniform(*model.random_mean)
            textures[value] = rng.uniform(*model.random_texture)
    return means, textures


def synthesize(classes: np.ndarray, spacing_mm: Sequence[float], model: AppearanceModel,
               rng: np.random.Generator, axial_axis: int = 2) -> np.ndarray:
    """Draw one image of ``classes`` (uint8 generation classes) with a random appearance of ``model``.

    Args:
        classes: generation classes on the image grid; ``OUTSIDE_CLASS`` marks voxels outside the scan.
        spacing_mm: voxel size along each axis (blur and blob sizes are in mm).
        model: the modality's appearance model.
        rng: the only source of randomness (the same state gives the same image).
        axial_axis: the axis along which slices are stacked (slice thickness acts along it).

    Returns:
        float32 image of the same shape, in the modality's units, clipped to ``model.value_range``.
    """
    if classes.dtype != np.uint8:
        raise ValueError(f"generation classes must be uint8, got {classes.dtype}")
    spacing = np.asarray(spacing_mm, dtype=float)
    outside = classes == OUTSIDE_CLASS
    present = np.unique(classes[~outside])
    means, textures = _class_means(present, model, rng)

    white = rng.standard_normal(classes.shape, dtype=_F)
    correlated = ndimage.gaussian_filter(white, 0.7, mode="reflect")
    correlated /= correlated.std() + 1e-6
    textured = np.isin(classes, list(model.textured)) if model.textured else np.zeros(classes.shape, bool)
    image = means[classes] + textures[classes] * np.where(textured, correlated, white)
    if model.blob_amplitude > 0:
        blobs = _smooth_field(classes.shape, rng.uniform(*model.blob_size_mm) / spacing, rng)
        amplitude = rng.uniform(0.0, model.blob_amplitude, 256).astype(_F)
        image += amplitude[classes] * blobs

    kernel = np.full(3, rng.uniform(*model.kernel_mm))
    kernel[axial_axis] = np.hypot(kernel[axial_axis], rng.uniform(*model.slice_thickness_mm) / 2.355)
    image = ndimage.gaussian_filter(image, kernel / spacing, mode="nearest")
    if rng.random() < model.sharpen_probability:  # a sharp (bone) kernel overshoots at edges
        smooth = ndimage.gaussian_filter(image, 1.0, mode="nearest")
        image += _F(rng.uniform(*model.sharpen_amount)) * (image - smooth)
    if model.bias_strength > 0:
        bias = _smooth_field(classes.shape, rng.uniform(40.0, 120.0) / spacing, rng)
        image *= np.exp(_F(rng.uniform(0.0, model.bias_strength)) * bias)
    noise_std = rng.uniform(*model.noise)
    if noise_std > 0:
        noise = rng.standard_normal(classes.shape, dtype=_F)
        correlation = rng.uniform(*model.noise_correlation_voxels)
        if correlation > 0.1:
            noise = ndimage.gaussian_filter(noise, correlation, mode="reflect")
            noise /= noise.std() + 1e-6
        image += _F(noise_std) * noise
    image[outside] = model.value_range[0]
    return np.clip(image, *model.value_range).astype(_F)
