"""The disc task adapter of :mod:`spineseg.training`: slabs, augmentation, loss, validation and manifest.

Data: MRI phantoms (``random_mri_phantom``) or MRIs with disc point labels
go through the same slab extraction as inference
(:func:`spineseg.discs.slab.extract_slab`, plane found from the image), and
the disc centres are projected onto the slab. Slabs are made once and kept in
memory, each phantom slab with the stack of generation classes under it
(:class:`spineseg.phantoms.mri.MRITissue`, nearest voxel on each plane the
slab averages). Variety then comes from on-the-fly augmentation:

* appearance: with ``sampler.synthetic_probability`` a phantom slab is drawn
  anew from its classes with a random contrast
  (:func:`spineseg.phantoms.mri_appearance.synthesize_mri`: T1-, T2-, STIR-like
  or random signals, patchy marrow, Modic changes, blobs, bias, blur, slice
  thickness), then averaged and z-scored as :func:`extract_slab` does;

* geometry: rotation (+-12 deg), scale (0.8-1.2), shift (+-12 %), and a
  front-back (left-right in the picture) flip, which keeps every label valid;
  head-foot flips are never used because they would reverse the disc order;
* intensity: contrast and brightness change, gamma-like curve, Gaussian noise.

Validation decodes each validation slab exactly as inference does
(:func:`spineseg.discs.decode.decode_chain`, anchors included) and scores the
discs with :func:`spineseg.evaluation.disc_metrics.score_discs` in the slab plane (8 mm
threshold). The phantom score is the number of discs found with the right
label divided by the larger of the reference and predicted counts, so misses,
spurious discs and wrong labels all lower it. With ``validation.real_folder``
set, the real MRIs of :mod:`spineseg.evaluation.real_mris` (validation only,
never trained on) are labelled whole, slab and all, and scored as in their
done-when (named right within 5 mm / 3 mm head to foot); the real score is
the mean over scans of the share of their discs named right, and the score
that picks the exported model is the mean of the phantom and real scores.
Both, and each scan's share, are columns of ``metrics.csv``. With
``validation.real_perturbed`` each real scan is also read tilted, resized and
re-contrasted (:data:`spineseg.evaluation.real_mris.PERTURBATIONS`) and its share
is the mean over these readings: one reading of a few scans can be luck (the
bundled v3 names 11 of PAM50's 18 discs as it lies, none leaning 4 degrees). Where the folder holds the
real lumbar exams, two more columns pool them over all their readings: ``real_lumbar_named`` (the share of
their discs named right) and ``real_lumbar_exams_all_right`` (the share of exam readings with every disc
named right), issue 29's done-when.

Optimiser: the published RMSprop (lr 2.5e-4) is the default. The bundled CPU
model used Adam (lr 1e-3, cosine decay) because it reaches a usable model in
far fewer steps, which is what a short one-thread CPU training needs.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ...anatomy import STANDARD_LEVELS
from ...discs.decode import decode_chain
from ..disc_loss import heatmap_loss
from ...evaluation.disc_metrics import DiscScores, score_discs, summarise
from ...discs.pipeline import read_discs
from ...networks.disc_model import DiscModel, DiscModelSettings
from ...networks.hourglass import AttentionHourglassNet, HourglassConfig
from ...evaluation.real_mris import (PERTURBATIONS, RealScan, is_lumbar_exam, load_real_scans, lumbar_summary,
                                 perturbed_scan, score_real_scan)
from ...discs.slab import extract_slab, find_midsagittal_x, slab_planes
from ...discs.targets import N_CHANNELS, channel_of, render_heatmaps
from ...errors import InputError
from ...io import read_volume
from ...labels import DISC_NUMBERS
from ...phantoms.mri import random_mri_phantom
from ...phantoms.mri_appearance import synthesize_mri
from ...phantoms.real_shapes import RealShapeLibrary, load_shape_folders
from ...phantoms.synth import OUTSIDE_CLASS
from ...progress import ProgressCallback, no_progress
from ...volume import Volume, VolumeKind
from ..config import Layout, TrainingConfig
from ..datasets import DataSplit

__all__ = ["Acquisition", "acquisition_effects", "SlabSample", "phantom_sample", "make_training_set", "slab_sample_from_files", "augment_batch",
           "disc_settings", "disc_manifest", "DiscTask"]

OUTPUT_STRIDE = 4  # input pixels per heatmap pixel
SLAB_THICKNESS_MM = 6.0
# Columns of the pooled real lumbar exams (when the real folder holds them).
LUMBAR_COLUMNS = ("real_lumbar_named", "real_lumbar_exams_all_right")
PLANE_JITTER_MM = 10.0  # training slabs: plane off the found mid-plane by up to this
SLAB_THICKNESS_RANGE_MM = (1.0, 9.0)  # training slabs: thickness drawn from this range


@dataclass
class SlabSample:
    """One training image: the slab, its disc points (input pixels, all discs of the spine), truth in RAS.

    ``classes`` (phantoms only): the generation classes of each plane the slab averages, (S, S, planes) uint8,
    ``OUTSIDE_CLASS`` outside the scan.
    """

    image: np.ndarray
    points: dict[int, np.ndarray]
    slab_to_ras: np.ndarray
    truth_ras: dict[int, np.ndarray]
    contrast: str
    classes: np.ndarray | None = None


def _anchored_levels(rng: np.random.Generator, lengths: tuple[int, int] = (7, 14)) -> list[int]:
    """A field of view of ``lengths`` levels; most include an anchor (C1/C2 at the top or the sacrum at the bottom)."""
    length = int(rng.integers(lengths[0], lengths[1] + 1))
    draw = rng.random()
    if draw < 0.42:
        return STANDARD_LEVELS[:length]
    if draw < 0.84:
        return STANDARD_LEVELS[-length:]
    start = int(rng.integers(0, len(STANDARD_LEVELS) - length + 1))
    return STANDARD_LEVELS[start : start + length]


VARIED_LENGTHS = (4, 25)  # levels in a field of view with phantom variety: a cervical crop to a whole spine


def phantom_sample(rng: np.random.Generator, size: int = 256, variety: bool = False,
                   real_shapes: RealShapeLibrary | None = None, lumbosacral: bool = False) -> SlabSample:
    """Generate one random phantom and cut its slab exactly as inference does (see ``random_mri_phantom`` for
    ``variety``, which also lets fields of view run from 4 levels to the whole spine, ``real_shapes`` and
    ``lumbosacral``)."""
    levels = _anchored_levels(rng, VARIED_LENGTHS if variety else (7, 14))
    phantom = random_mri_phantom(rng, levels=levels, variety=variety, real_shapes=real_shapes,
                                 lumbosacral=lumbosacral)
    # Mid-plane detection errs on real scans and slabs differ: the plane off by up to +-10 mm, 1-9 mm thick.
    plane = find_midsagittal_x(phantom.image) + rng.uniform(-PLANE_JITTER_MM, PLANE_JITTER_MM)
    thickness = rng.uniform(*SLAB_THICKNESS_RANGE_MM)
    slab = extract_slab(phantom.image, size=size, thickness_mm=thickness, plane_x=plane)
    points = {disc.number: slab.ras_to_pixel(disc.centre)[0] for disc in phantom.layout.discs}
    classes = np.stack([_nearest_classes(phantom.classes, phantom.image, points_ras)
                        for points_ras in slab_planes(slab.slab_to_ras, size, thickness)], axis=-1)
    return SlabSample(slab.image, points, slab.slab_to_ras, dict(phantom.disc_points), phantom.contrast, classes)


def _nearest_classes(classes: np.ndarray, grid: Volume, ras: np.ndarray) -> np.ndarray:
    """The class of the voxel nearest each RAS point (..., 3) of ``grid``; ``OUTSIDE_CLASS`` outside it."""
    ijk = np.rint(grid.ras_to_ijk(ras.reshape(-1, 3))).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(classes.shape)), axis=1)
    out = np.full(len(ijk), OUTSIDE_CLASS, dtype=np.uint8)
    out[inside] = classes[tuple(ijk[inside].T)]
    return out.reshape(ras.shape[:-1])


def synthetic_slab(sample: SlabSample, rng: np.random.Generator) -> np.ndarray:
    """A new slab image of ``sample``'s generation classes with a random contrast, averaged over its planes and
    z-scored inside the scan as :func:`extract_slab` does (0 outside)."""
    pixel_mm = float(np.linalg.norm(sample.slab_to_ras[:, 0]))
    planes = synthesize_mri(sample.classes, (pixel_mm, pixel_mm, 1.0), rng, lateral_axis=2)
    inside_planes = sample.classes != OUTSIDE_CLASS
    count = inside_planes.sum(axis=-1)
    inside = count > 0
    image = np.zeros(count.shape, dtype=np.float32)
    mean = (planes * inside_planes).sum(axis=-1)[inside] / count[inside]
    image[inside] = _zscore(mean)
    return image


def _synthetic_description(probability: float) -> str:
    if probability <= 0:
        return ""
    return (f", {probability:.0%} of slabs drawn anew from their generation classes with a random contrast "
            f"(spineseg.phantoms.mri_appearance)")


def make_training_set(count: int, seed: int | Sequence[int], size: int = 256, progress: ProgressCallback = no_progress,
                      show_bar: bool = True, variety: bool = False,
                      real_shapes: RealShapeLibrary | None = None, lumbosacral: bool = False) -> list[SlabSample]:
    """Generate ``count`` phantom slabs (about 1 s each on one CPU thread)."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in tqdm(range(count), desc="phantoms", disable=not show_bar):
        samples.append(phantom_sample(rng, size, variety, real_shapes, lumbosacral))
        progress((index + 1) / count, f"phantom {index + 1}/{count}")
    return samples


class Acquisition(str, enum.Enum):
    """Effects of a real acquisition added to training slabs (none moves anatomy, except the crop, which cuts it)."""

    COIL_BIAS = "coil_bias"  # posterior surface coil: bright behind the spine, dark in front
    GIBBS = "gibbs"  # ringing from a truncated k-space
    GHOSTING = "ghosting"  # motion ghosts along the phase-encoding direction
    NOISE = "noise"  # Rician-like noise
    CROP = "crop"  # a head-foot field of view keeping at least MIN_CROP_DISCS discs


MIN_CROP_DISCS = 4
CROP_PROBABILITY = 0.3
EFFECT_PROBABILITY = 0.5


def _crop_window(rows: list[float], size: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """Rows [first, last] of a head-foot crop keeping at least MIN_CROP_DISCS consecutive discs, or None."""
    rows = sorted(r for r in rows if 0 <= r <= size - 1)
    if len(rows) <= MIN_CROP_DISCS:
        return None
    count = int(rng.integers(MIN_CROP_DISCS, len(rows) + 1))
    first = int(rng.integers(0, len(rows) - count + 1))
    kept = rows[first : first + count]
    above = rows[first - 1] if first > 0 else 0.0
    below = rows[first + count] if first + count < len(rows) else size - 1.0
    top = kept[0] - rng.uniform(0.3, 0.7) * (kept[0] - above)
    bottom = kept[-1] + rng.uniform(0.3, 0.7) * (below - kept[-1])
    return int(np.floor(top)), int(np.ceil(bottom))


def acquisition_effects(image: np.ndarray, rng: np.random.Generator, effects: tuple[Acquisition, ...],
                        probability: float = EFFECT_PROBABILITY) -> np.ndarray:
    """One slab (S, S), rows head to foot and columns front to back, with the intensity effects of ``effects``.

    Each effect is applied with ``probability``;
    none moves the anatomy: ringing is a centred low-pass filter, ghosts are faint copies, bias and noise
    are per pixel.
    """
    out = image.astype(np.float32, copy=True)
    size = out.shape[0]

    def chosen(effect: Acquisition) -> bool:
        return effect in effects and rng.random() < probability

    if chosen(Acquisition.COIL_BIAS):
        depth = np.linspace(1.0, 0.0, size)[None, :]  # 1 at the front, 0 at the back
        falloff = rng.uniform(1.0, 4.0)
        out = (out - out.min()) * np.exp(-falloff * depth).astype(np.float32) + out.min()
    if chosen(Acquisition.GIBBS):
        axis = int(rng.integers(0, 2))
        spectrum = np.fft.fftshift(np.fft.fft(out, axis=axis), axes=axis)
        keep = int(size * rng.uniform(0.3, 0.7) / 2)
        mask = np.zeros(size, dtype=bool)
        mask[size // 2 - keep : size // 2 + keep + 1] = True
        shape = [1, 1]
        shape[axis] = size
        spectrum = spectrum * mask.reshape(shape)
        out = np.real(np.fft.ifft(np.fft.ifftshift(spectrum, axes=axis), axis=axis)).astype(np.float32)
    if chosen(Acquisition.GHOSTING):
        axis = int(rng.integers(0, 2))
        period = int(rng.integers(4, 12))
        ghost = np.roll(out, size // period, axis=axis) + np.roll(out, -(size // period), axis=axis)
        out = out + rng.uniform(0.05, 0.2) * 0.5 * ghost
    if chosen(Acquisition.NOISE):
        sigma = rng.uniform(0.02, 0.2) * (out.std() + 1e-6)
        shifted = out - out.min()
        out = np.hypot(shifted + sigma * rng.standard_normal(out.shape),
                       sigma * rng.standard_normal(out.shape)).astype(np.float32) + out.min()
    return _zscore(out)


def _zscore(image: np.ndarray) -> np.ndarray:
    return ((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32)


def augment_batch(
    samples: list[SlabSample], rng: np.random.Generator, stride: int = 4, sigma: float = 1.25, strength: float = 1.0,
    effects: tuple[Acquisition, ...] = tuple(Acquisition), effect_probability: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augmented images (N,1,S,S), target heatmaps (N,C,S/stride,S/stride) and visibility (N,C).

    Geometry first (rotation, scale, shift, front-back flip, scaled by ``strength``), then the acquisition
    ``effects`` (see :class:`Acquisition`; each with ``effect_probability``, by default EFFECT_PROBABILITY and
    CROP_PROBABILITY times ``strength``) and the intensity curve.
    """
    size = samples[0].image.shape[0]
    images = torch.from_numpy(np.stack([s.image for s in samples])[:, None].astype(np.float32))
    thetas, heatmaps, visibilities, windows = [], [], [], []
    for sample in samples:
        angle = np.deg2rad(rng.uniform(-12, 12) * strength)
        scale = math.exp(rng.uniform(math.log(0.8), math.log(1.2)) * strength)
        shift = rng.uniform(-0.12, 0.12, 2) * strength
        flip = rng.random() < 0.5 * strength
        # Output-normalised (x=col, y=row) -> input-normalised coordinates.
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) / scale
        if flip:
            rotation = rotation @ np.diag([-1.0, 1.0])
        theta = np.concatenate([rotation, shift[:, None]], axis=1)
        thetas.append(theta)
        inverse = np.linalg.inv(rotation)
        moved = {}
        for number, (row, col) in sample.points.items():
            u = np.array([(2 * col + 1) / size - 1, (2 * row + 1) / size - 1])
            v = inverse @ (u - shift)
            moved[number] = np.array([((v[1] + 1) * size - 1) / 2, ((v[0] + 1) * size - 1) / 2])
        window = None
        crop_probability = CROP_PROBABILITY * strength if effect_probability is None else effect_probability
        if Acquisition.CROP in effects and rng.random() < crop_probability:
            window = _crop_window([p[0] for p in moved.values()], size, rng)
        windows.append(window)
        kept = moved if window is None else {n: p for n, p in moved.items() if window[0] <= p[0] <= window[1]}
        heatmap, visibility = render_heatmaps(kept, size, stride, sigma)
        for number, (row, _) in moved.items():
            if number not in kept and window is not None and min(abs(row - window[0]), abs(row - window[1])) < 2 * stride:
                visibility[channel_of(number)] = 0.0  # cut by the crop's edge: unknown
        heatmaps.append(heatmap)
        visibilities.append(visibility)
    grid = F.affine_grid(torch.tensor(np.stack(thetas), dtype=torch.float32), list(images.shape), align_corners=False)
    background = images.amin(dim=(2, 3), keepdim=True)
    warped = F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = warped + background
    n = len(samples)
    if effects:
        slabs = []
        for index, window in enumerate(windows):
            slab = acquisition_effects(warped[index, 0].numpy(), rng, effects,
                                       EFFECT_PROBABILITY * strength if effect_probability is None else effect_probability)
            if window is not None:  # outside the field of view is 0, as extract_slab leaves it
                inside = np.zeros(size, dtype=bool)
                inside[max(window[0], 0) : window[1] + 1] = True
                slab[inside] = _zscore(slab[inside])
                slab[~inside] = 0.0
            slabs.append(slab)
        warped = torch.from_numpy(np.stack(slabs)[:, None])
    contrast = torch.from_numpy(np.exp(rng.normal(0, 0.2 * strength, (n, 1, 1, 1))).astype(np.float32))
    offset = torch.from_numpy(rng.normal(0, 0.2 * strength, (n, 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.uniform(0, 0.25 * strength, (n, 1, 1, 1)).astype(np.float32))
    # Noise from rng too (not torch's global generator), so a batch is fixed by the rng's state.
    white = torch.from_numpy(rng.standard_normal(tuple(warped.shape), dtype=np.float32))
    warped = warped * contrast + offset + noise * white
    # Gamma-like curve applied around the mean keeps the z-scored range.
    gamma = torch.from_numpy(rng.uniform(-0.15, 0.15, (n, 1, 1, 1)).astype(np.float32) * strength)
    warped = warped + gamma * (warped**2 - 1.0)
    return warped, torch.from_numpy(np.stack(heatmaps)), torch.from_numpy(np.stack(visibilities))




def slab_sample_from_files(image_path: Path, labels_path: Path, size: int = 256, contrast: str = "") -> SlabSample:
    """An MRI and its disc point labels (voxel value n marks disc n, Spinal Cord Toolbox numbering) as a slab.

    Each disc's point is the centre of its labelled voxels; values that are not
    disc numbers (SCT's 1, 49, 50 and the like) are ignored.

    Raises:
        InputError: unreadable files, non-integer label values, an image too small for a slab, or no disc
            label at all.
    """
    volume = read_volume(image_path)
    labels = read_volume(labels_path, VolumeKind.LABEL)
    fractional = labels.array[labels.array != np.round(labels.array)]
    if fractional.size:
        raise InputError(f"{labels_path} holds {fractional.size} voxel(s) with non-integer label values (e.g. "
                         f"{float(fractional[0]):g}); disc labels are whole numbers (2 = C1/C2 ... 25 = L5/S1)")
    values = [int(v) for v in np.unique(labels.array) if v != 0]
    points_ras = {value: labels.ijk_to_ras(np.argwhere(labels.array == value).mean(axis=0))[0]
                  for value in values if value in DISC_NUMBERS}
    if not points_ras:
        raise InputError(f"{labels_path} holds no disc label (voxel values 2-25, Spinal Cord Toolbox numbering: "
                         f"2 = C1/C2 ... 25 = L5/S1); found {values[:10] or 'only zeros'}")
    try:
        slab = extract_slab(volume, size=size, thickness_mm=SLAB_THICKNESS_MM)
    except InputError as error:
        raise InputError(f"{image_path}: {error}") from None
    points = {number: slab.ras_to_pixel(point)[0] for number, point in points_ras.items()}
    return SlabSample(slab.image, points, slab.slab_to_ras, points_ras, contrast)


def disc_settings(network: HourglassConfig, input_size: int) -> DiscModelSettings:
    """The input settings of a disc network trained here (the slab geometry is fixed for training)."""
    return DiscModelSettings(input_size, OUTPUT_STRIDE, SLAB_THICKNESS_MM, network)


def disc_manifest(network: HourglassConfig, input_size: int, sigma: float) -> dict:
    """The manifest part :class:`~spineseg.networks.disc_model.DiscModel` needs to rebuild and run a network,
    with what it was trained to output."""
    return {
        "task": "discs",
        **disc_settings(network, input_size).to_manifest(),
        "heatmap_sigma_px": sigma,
        "channels": {"input": [f"mid-sagittal slab, {SLAB_THICKNESS_MM:g} mm mean, z-scored"],
                     "output": [f"disc {n}" for n in DISC_NUMBERS]},
    }


def _slab_truth(sample: SlabSample) -> dict[int, np.ndarray]:
    """Reference discs inside the slab image, in RAS on the slab plane."""
    size = sample.image.shape[0]
    return {number: np.array([row, col, 1.0]) @ sample.slab_to_ras.T
            for number, (row, col) in sample.points.items() if 0 <= row <= size - 1 and 0 <= col <= size - 1}


class DiscTask:
    """Training pieces of the attention hourglass for :func:`spineseg.training.trainer.train`."""

    loss_terms: tuple[str, ...] = ()
    phantom_metrics = ("median_distance_mm", "false_negative_rate", "false_positive_rate", "label_accuracy")

    def __init__(self, config: TrainingConfig, train_samples: list[SlabSample],
                 validation_samples: list[SlabSample], rng: np.random.Generator, data_description: str,
                 real_scans: Sequence[RealScan] = ()) -> None:
        if not train_samples:
            raise InputError("the disc task needs at least one training image")
        self.real_scans = list(real_scans)
        # How each real scan is read: as it is, or when asked in nine ways (tilted, resized, re-contrasted). The
        # changed copies are made at validation, one at a time (the 18 lumbar exams hold up to 45 MB each).
        self.real_readings = {scan.name: PERTURBATIONS if config.validation.real_perturbed else PERTURBATIONS[:1]
                              for scan in self.real_scans}
        lumbar = (LUMBAR_COLUMNS if any(is_lumbar_exam(scan.name) for scan in self.real_scans) else ())
        real_columns = (("real_score",) + tuple(f"real_{scan.name}" for scan in self.real_scans) + lumbar
                        if self.real_scans else ())
        self.validation_metrics = ("score", "phantom_score", *real_columns, *self.phantom_metrics)
        self.config = config
        self.network_config = HourglassConfig(out_channels=N_CHANNELS, features=config.model.features,
                                              stacks=config.model.stacks, depth=config.model.depth)
        self.train_samples = train_samples
        self.validation_samples = validation_samples
        self.rng = rng
        self.data_description = data_description

    @property
    def has_validation(self) -> bool:
        return bool(self.validation_samples or self.real_scans)

    @classmethod
    def from_split(cls, config: TrainingConfig, split: DataSplit, rng: np.random.Generator) -> "DiscTask":
        """Generate the phantom slabs or cut the slabs of the MRIs of ``split``."""
        size = config.model.input_size
        if split.layout is Layout.PHANTOMS:
            variety, lumbosacral = config.sampler.phantom_variety, config.sampler.lumbosacral_variety
            shapes = load_shape_folders(config.data.real_shapes) if config.data.real_shapes else None
            train = make_training_set(len(split.train), config.seed, size, variety=variety, real_shapes=shapes,
                                      lumbosacral=lumbosacral)
            validation = make_training_set(len(split.validation), (config.seed, 1), size, variety=variety,
                                           lumbosacral=lumbosacral)
            shape_note = f", real vertebra shapes from {config.data.real_shapes} in part of them" if shapes else ""
            description = (f"{len(train)} generated MRI phantoms (T1w and T2w, spineseg.phantoms.mri.random_mri_phantom "
                           f"via spineseg.training.tasks.discs.phantom_sample, seed {config.seed}"
                           f"{', with phantom variety' if variety else ''}"
                           f"{', with lumbosacral variety' if lumbosacral else ''}{shape_note}), augmented on the fly"
                           f"{_synthetic_description(config.sampler.synthetic_probability)}; "
                           f"validation: {len(validation)} phantoms (seed ({config.seed}, 1))")
        else:
            def read(subjects):
                return [slab_sample_from_files(s.image, s.labels, size, s.contrast)
                        for s in tqdm(subjects, desc="reading MRIs", leave=False)]

            train, validation = read(split.train), read(split.validation)
            description = (f"{len(train)} MRIs with disc labels from {config.data.path} ({split.layout.value} layout), "
                           f"augmented on the fly; validation: {len(validation)} MRIs (split by subject, see split.json)")
        real = load_real_scans(config.validation.real_folder) if config.validation.real_folder else []
        if real:
            description += f"; real validation (never trained on): {', '.join(scan.name for scan in real)}"
            if config.validation.real_perturbed:
                description += f", each read {len(PERTURBATIONS)} ways (tilted, resized, re-contrasted)"
        return cls(config, train, validation, rng, description, real)

    def build_network(self) -> AttentionHourglassNet:
        return AttentionHourglassNet(self.network_config)

    def next_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        chosen = [self.train_samples[i] for i in self.rng.integers(0, len(self.train_samples), self.config.batch_size)]
        chosen = [dataclasses.replace(sample, image=synthetic_slab(sample, self.rng))
                  if sample.classes is not None and self.rng.random() < self.config.sampler.synthetic_probability
                  else sample for sample in chosen]
        images, targets, visibility = augment_batch(chosen, self.rng, OUTPUT_STRIDE, self.config.model.sigma,
                                                    self.config.sampler.augmentation_strength)
        return {"images": images.to(device), "targets": targets.to(device), "visibility": visibility.to(device)}

    def loss(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = heatmap_loss(network(batch["images"]), batch["targets"], batch["visibility"],
                            self.config.loss.foreground_weight)
        return loss, {}

    @torch.inference_mode()
    def validate(self, network: torch.nn.Module, device: torch.device) -> dict[str, float]:
        settings = disc_settings(self.network_config, self.config.model.input_size)
        heatmaps = DiscModel(network, settings, device).heatmaps  # as inference runs it
        scores: list[DiscScores] = []
        for sample in self.validation_samples:
            pixel_mm = float(np.linalg.norm(sample.slab_to_ras[:, 0]))
            found = decode_chain(heatmaps(sample.image), sample.slab_to_ras, pixel_mm, OUTPUT_STRIDE,
                                 inside=sample.image != 0).discs  # z-scored slabs are exactly 0 outside the scan
            scores.append(score_discs(found, _slab_truth(sample)))
        summary = summarise(scores)
        correct = sum(s.correct_labels for s in scores)
        phantom = correct / max(summary["reference_discs"], summary["predicted_discs"], 1)
        result = {"phantom_score": phantom, **{name: summary[name] for name in self.phantom_metrics}}
        if not self.real_scans:
            return {"score": phantom, **result}
        real, lumbar = {}, []
        for scan in self.real_scans:  # read as inference reads them
            scores = []
            for change in self.real_readings[scan.name]:
                reading = perturbed_scan(scan, change)
                found = read_discs(reading.image, heatmaps, self.config.model.input_size, SLAB_THICKNESS_MM,
                                   OUTPUT_STRIDE).decoded.discs
                scores.append(score_real_scan(reading, found))
            real[f"real_{scan.name}"] = float(np.mean([score.fraction for score in scores]))
            lumbar.extend(score for score in scores if is_lumbar_exam(score.name))
        real_score = float(np.mean(list(real.values())))
        if lumbar:
            pooled = lumbar_summary(lumbar)
            real["real_lumbar_named"] = pooled["named_right"] / pooled["reference"]
            real["real_lumbar_exams_all_right"] = pooled["exams_all_right"] / pooled["exams"]
        score = real_score if not self.validation_samples else 0.5 * (phantom + real_score)
        return {"score": score, **result, "real_score": real_score, **real}

    def manifest(self) -> dict:
        return disc_manifest(self.network_config, self.config.model.input_size, self.config.model.sigma)

    def describe_data(self) -> str:
        return self.data_description
