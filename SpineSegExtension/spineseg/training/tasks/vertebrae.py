"""The vertebra task adapter of :mod:`spineseg.training`: cases, batches, loss, validation and manifest.

Training follows the paper: batch size 1 by default, the published sampler
(:mod:`spineseg.training.vertebra_sampler`) and loss (:mod:`spineseg.training.vertebra_loss`). Cases are CT phantoms generated on
the model's grid, or CTs with VerSe label maps resampled onto it exactly as
inference does (:func:`~spineseg.vertebrae.pipeline.prepare_working_image`).

Validation runs the network on a fixed set of patches drawn once, without
augmentation, from the validation cases: Dice of the mask (empty patches
count 1 when nothing is predicted), level error, identification (rounded
level right) and completeness accuracy. The score that picks the best model
is the mean of Dice, identification and completeness accuracy. With
``validation.scans`` set, the first that many validation cases are also
segmented whole by the inference walk and naming, and the score becomes
their mean level-matched Dice (a vertebra named wrong scores 0): what a user
gets from a scan, where patch scores are a noisy guide to it. With
``validation.real_folder`` set, the real CTs there (:mod:`spineseg.evaluation.real_cts`) are
segmented by the whole pipeline too, and the score is the mean of the phantom
and the real score, so real scans help choose the exported model. They are
never trained on.

Phantom cases keep their map of generation classes, so that the sampler can
draw a patch anew with a random CT appearance (:mod:`spineseg.phantoms.ct_appearance`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ...anatomy import STANDARD_LEVELS
from ...errors import InputError
from ...geometry import resample_to
from ...io import read_volume
from ...metrics import dice, score_vertebrae
from ...networks.unet3d import IterativeFCN, IterativeFCNConfig
from ...phantoms.ct import random_ct_phantom
from ...phantoms.ct_appearance import CT_APPEARANCE, synthesize_ct
from ...phantoms.real_shapes import RealShapeLibrary, load_shape_folders
from ..vertebra_loss import IterativeFCNLoss
from ...networks.vertebra_model import VertebraModel, VertebraModelSettings
from ...vertebrae.pipeline import find_vertebrae, label_working_grid, prepare_working_image, segment_vertebrae
from ..vertebra_sampler import PatchSampler, TrainingCase, TrainingPatch
from ...volume import VolumeKind
from ...publish import atomic_path
from ..cache import cache_folder, case_key
from ..config import Layout, Task, TrainingConfig
from ..datasets import DataSplit, Subject, read_dataset
from ..label_mapping import apply_mapping, describe_mapping, resolve_mapping
from ...evaluation.real_cts import read_real_cts, score_real_ct

__all__ = ["phantom_cases", "case_from_files", "cached_vertebra_case", "prepare_cases", "stack_patches", "VertebraTask"]

log = logging.getLogger(__name__)

# Label values a case may hold: background, the named levels, and L6 / T13 (cases with those are skipped).
_UNMODELLED = {25: "L6", 28: "T13"}
_VALIDATION_BATCH = 8


def phantom_cases(count: int, spacing_mm: float, seed: int | Sequence[int],
                  real_shapes: RealShapeLibrary | None = None) -> list[TrainingCase]:
    """Generate ``count`` random CT phantoms directly on the model's isotropic grid (some with real shapes)."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in tqdm(range(count), desc="phantoms", leave=False):
        phantom = random_ct_phantom(rng, spacing=(spacing_mm,) * 3, real_shapes=real_shapes)
        case = TrainingCase.from_hounsfield(phantom.image.array, phantom.labels.array, spacing_mm)
        case.tissue = phantom.tissue.array
        cases.append(case)
    return cases




def case_from_files(image_path: Path, labels_path: Path, spacing_mm: float,
                    label_mapping: dict[int, int] | None = None) -> TrainingCase | None:
    """A CT and its VerSe label map on the model's grid; None (with a warning) if it holds L6 or T13.

    ``label_mapping`` renumbers a label map of another numbering first (see :mod:`..label_mapping`).

    Raises:
        InputError: unreadable files, different grids, label values that are not VerSe numbers, or no vertebra.
    """
    image = read_volume(image_path)
    labels = read_volume(labels_path, VolumeKind.LABEL)
    if label_mapping is not None:
        labels = labels.with_array(apply_mapping(labels.array, label_mapping), VolumeKind.LABEL)
    if not labels.same_grid(image, tolerance=1e-3):
        raise InputError(f"{labels_path} is not on the grid of {image_path} (shape or geometry differ); "
                         "resample the label map onto its CT")
    values = set(np.unique(labels.array).tolist()) - {0}
    unknown = sorted(values - set(STANDARD_LEVELS) - set(_UNMODELLED))
    if unknown or not values:
        raise InputError(f"{labels_path} must hold vertebrae in VerSe numbering (1-24, 25 L6, 26 sacrum, 28 T13); "
                         + (f"found values {unknown[:10]}" if unknown else "it is empty"))
    unmodelled = sorted(_UNMODELLED[v] for v in values & set(_UNMODELLED))
    if unmodelled:
        log.warning("%s holds %s, which the model does not name; the case is skipped", labels_path.name,
                    " and ".join(unmodelled))
        return None
    working, grid = prepare_working_image(image, spacing_mm)
    resampled = resample_to(labels, grid).array
    return TrainingCase(working, resampled.astype(np.uint8), spacing_mm)


def cached_vertebra_case(
    image_path: Path, labels_path: Path, spacing_mm: float, folder: Path | None = None, label_mapping: str = ""
) -> TrainingCase | None:
    """:func:`case_from_files`, prepared once and then read from the cache.

    ``label_mapping`` (``data.label_mapping``) renumbers the labels first; the numbers it maps are part of the key.

    Returns the :class:`~spineseg.training.vertebra_sampler.TrainingCase`, or None for a case that is skipped (L6 or
    T13); the skip is cached too. Errors (unreadable files, bad labels) are raised and not cached.
    """
    mapping = resolve_mapping(label_mapping) if label_mapping else None
    settings: dict = {"spacing_mm": float(spacing_mm)}
    if mapping is not None:
        settings["label_mapping"] = sorted(mapping.items())
    folder = cache_folder("vertebrae") if folder is None else Path(folder)
    path = folder / f"{case_key([image_path, labels_path], settings)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            if not bool(stored["usable"]):
                return None
            return TrainingCase(stored["image"], stored["labels"], float(stored["spacing_mm"]))
    case = case_from_files(image_path, labels_path, spacing_mm, mapping)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        if case is None:
            np.savez(stream, usable=False)
        else:
            np.savez(stream, usable=True, image=case.image, labels=case.labels, spacing_mm=case.spacing_mm)
    return case


def prepare_cases(config: TrainingConfig) -> Path:
    """Prepare every case of ``config``'s data set into the cache, with a progress bar; return the cache folder.

    Raises:
        InputError: a task or data set without preparation (disc slabs, phantoms), or a case that cannot be read.
    """
    if config.task is not Task.VERTEBRAE:
        raise InputError(f"--prepare-only prepares vertebra cases; {config.task.value} cases are read as they are")
    split = read_dataset(config.task, config.data, config.seed)
    if split.layout is Layout.PHANTOMS:
        raise InputError("phantoms are generated for each run, not prepared; give --data a folder of CTs")
    for subject in tqdm(split.train + split.validation, desc="preparing CTs", unit="case"):
        cached_vertebra_case(subject.image, subject.labels, config.model.spacing_mm,
                             label_mapping=config.data.label_mapping)
    return cache_folder(Task.VERTEBRAE.value)


def stack_patches(patches: list[TrainingPatch], device: torch.device) -> dict[str, torch.Tensor]:
    """Patches as one batch of tensors on ``device`` (the keys the loss takes)."""
    def tensor(values) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=torch.float32, device=device)

    return {
        "inputs": tensor([p.inputs for p in patches]),
        "target": tensor([p.target for p in patches]),
        "weights": tensor([p.weights for p in patches]),
        "complete": tensor([p.complete for p in patches]),
        "level": tensor([p.position for p in patches]),
        "has_target": tensor([p.has_target for p in patches]),
        "level_known": tensor([p.level_known for p in patches]),
    }


def _read_cases(subjects: Sequence[Subject], config: TrainingConfig) -> list[TrainingCase]:
    """The usable cases of ``subjects`` on the model's grid (prepared once, see :func:`cached_vertebra_case`), named by file."""
    cases = []
    for subject in tqdm(subjects, desc="reading CTs", leave=False):
        case = cached_vertebra_case(subject.image, subject.labels, config.model.spacing_mm,
                                    label_mapping=config.data.label_mapping)
        if case is not None:
            case.name = subject.image.name
            cases.append(case)
    return cases


def _mapping_note(config: TrainingConfig) -> str:
    mapping = config.data.label_mapping
    return f", labels renumbered to VerSe ({describe_mapping(mapping)})" if mapping else ""


class VertebraTask:
    """Training pieces of the iterative FCN for :func:`spineseg.training.trainer.train`."""

    loss_terms = ("mask", "completeness", "level")
    patch_metrics = ("score", "dice", "level_error", "identification", "completeness_accuracy")
    scan_metrics = ("scan_dice", "scan_identification")
    real_metrics = ("real_dice", "real_named")

    def __init__(self, config: TrainingConfig, train_cases: list[TrainingCase],
                 validation_cases: list[TrainingCase], rng: np.random.Generator, data_description: str) -> None:
        self.config = config
        self.settings = VertebraModelSettings(
            config.model.spacing_mm, config.sampler.patch_size,
            IterativeFCNConfig(filters=config.model.filters, levels=config.model.levels))
        appearance = replace(CT_APPEARANCE, realistic_probability=config.sampler.realistic_probability)
        self.sampler = PatchSampler(
            train_cases, config.sampler, rng,
            lambda classes, spacing, rng: synthesize_ct(classes, (spacing,) * 3, rng, appearance),
            real_share=config.data.real_share, real_levels=config.data.real_levels)
        self.loss_function = IterativeFCNLoss(config.loss.fp_fn_weight, config.loss.level_weight)
        self.data_description = data_description
        self.validation_scans = validation_cases[:config.validation.scans]
        self.real_scans = read_real_cts(config.validation.real_folder) if config.validation.real_folder else []
        self.validation_metrics = (self.patch_metrics + (self.scan_metrics if self.validation_scans else ())
                                   + (self.real_metrics if self.real_scans else ()))
        self.validation_patches: list[TrainingPatch] = []
        if validation_cases:
            plain = replace(config.sampler, blank_probability=0.0, flip_probability=0.0, noise_std=0.0,
                            intensity_shift=0.0, intensity_scale=0.0, blur_probability=0.0, elastic_probability=0.0,
                            lowres_probability=0.0, gamma_probability=0.0, synthetic_probability=0.0)
            fixed = PatchSampler(validation_cases, plain, np.random.default_rng(config.seed))
            self.validation_patches = [fixed.sample() for _ in range(config.validation.patches)]

    @property
    def rng(self) -> np.random.Generator:
        return self.sampler.rng

    @property
    def has_validation(self) -> bool:
        return bool(self.validation_patches)

    @classmethod
    def from_split(cls, config: TrainingConfig, split: DataSplit, rng: np.random.Generator) -> "VertebraTask":
        """Generate the phantoms or read the CTs of ``split``."""
        spacing = config.model.spacing_mm
        if split.layout is Layout.PHANTOMS:
            shapes = load_shape_folders(config.data.real_shapes) if config.data.real_shapes else None
            generated = [s for s in split.train if s.image is None]
            train = phantom_cases(len(generated), spacing, config.seed, shapes)
            validation = phantom_cases(len(split.validation), spacing, (config.seed, 1))
            shape_note = f", real vertebra shapes from {config.data.real_shapes} in part of them" if shapes else ""
            description = (f"{len(train)} random CT phantoms (spineseg.phantoms.ct.random_ct_phantom, seed "
                           f"{config.seed}){shape_note}, {config.sampler.synthetic_probability:.0%} of patches drawn "
                           "anew from their tissue classes with a random CT appearance "
                           f"(spineseg.phantoms.ct_appearance)")
            real = [s for s in split.train if s.image is not None]
            if real:
                train += _read_cases(real, config)
                description += (f"; mixed with {len(real)} real labelled CT(s) drawn for "
                                f"{config.data.real_share:.0%} of the patches, same augmentation"
                                + ("" if config.data.real_levels else ", masks and completeness only (no level "
                                   "target)") + ": "
                                + "; ".join(f"{s.image} with {s.labels}" for s in real)
                                + _mapping_note(config))
            description += f"; validation: {len(validation)} phantoms (seed ({config.seed}, 1))"
            if config.validation.real_folder:
                description += f" and the real CTs of {config.validation.real_folder} (validation only)"
        else:
            train = _read_cases(split.train, config)
            validation = _read_cases(split.validation, config)
            if not train:
                raise InputError(f"no usable training case in {config.data.path} (all hold L6 or T13)")
            description = (f"{len(train)} CTs with VerSe label maps from {config.data.path} ({split.layout.value} "
                           f"layout{_mapping_note(config)}); validation: {len(validation)} CTs (split by subject, "
                           "see split.json)")
        return cls(config, train, validation, rng, description)

    def build_network(self) -> IterativeFCN:
        return IterativeFCN(self.settings.network)

    def next_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        return stack_patches([self.sampler.sample() for _ in range(self.config.batch_size)], device)

    def loss(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = self.loss_function(network(batch["inputs"]), batch["target"], batch["weights"], batch["complete"],
                                   batch["level"], batch["has_target"], batch["level_known"])
        return terms.total, {"mask": terms.mask, "completeness": terms.completeness, "level": terms.position}

    @torch.inference_mode()
    def validate(self, network: torch.nn.Module, device: torch.device) -> dict[str, float]:
        network.eval()
        dices, errors, identified, completeness = [], [], [], []
        for start in range(0, len(self.validation_patches), _VALIDATION_BATCH):
            patches = self.validation_patches[start:start + _VALIDATION_BATCH]
            output = network(stack_patches(patches, device)["inputs"])
            masks = (output.mask_logits > 0).cpu().numpy()
            positions = output.position.float().cpu().numpy()
            complete = (output.completeness_logit > 0).cpu().numpy()
            for patch, mask, position, is_complete in zip(patches, masks, positions, complete):
                dices.append(dice(mask[0], patch.target[0] > 0.5))
                if patch.has_target:
                    errors.append(abs(float(position) - patch.position))
                    identified.append(round(float(position)) == patch.position)
                    completeness.append(bool(is_complete) == bool(patch.complete))
        scores = {
            "dice": float(np.mean(dices)),
            "level_error": float(np.mean(errors)) if errors else float("nan"),
            "identification": float(np.mean(identified)) if identified else 0.0,
            "completeness_accuracy": float(np.mean(completeness)) if completeness else 0.0,
        }
        phantom_score = (scores["dice"] + scores["identification"] + scores["completeness_accuracy"]) / 3
        if self.validation_scans:
            scores.update(self._validate_scans(network, device))
            phantom_score = scores["scan_dice"]
        if self.real_scans:
            scores.update(self._validate_real(network, device))
            return {"score": (phantom_score + scores["real_dice"]) / 2, **scores}
        return {"score": phantom_score, **scores}

    def _validate_scans(self, network: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Walk, name and paint each validation scan on the working grid; mean level-matched Dice and
        identification rate over its vertebrae."""
        model = VertebraModel(network, self.settings, device)
        dices, identified = [], []
        for case in self.validation_scans:
            found, levels = find_vertebrae(case.image, model)
            labels = label_working_grid(found, levels, case.image.shape)
            scores = score_vertebrae(labels, case.labels, (case.spacing_mm,) * 3)
            dices.append(scores.mean_dice)
            identified.append(scores.identification_rate)
        return {"scan_dice": float(np.mean(dices)), "scan_identification": float(np.mean(identified))}

    def _validate_real(self, network: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """The whole pipeline on each real CT: mean level-matched Dice and share named right, over scored levels."""
        model = VertebraModel(network, self.settings, device)
        scores = [score_real_ct(segment_vertebrae(scan.image, model).label_map.array, scan) for scan in self.real_scans]
        return {"real_dice": float(np.mean([s["dice"] for s in scores])),
                "real_named": float(np.mean([s["named"] for s in scores]))}

    def manifest(self) -> dict:
        return {
            "task": "vertebrae",
            **self.settings.to_manifest(),
            "channels": ["CT (HU clipped to [-1000, 3096], divided by 1000; outside scan -2)", "instance memory"],
        }

    def describe_data(self) -> str:
        return self.data_description
