"""An on-disk cache of prepared training cases, so that a run (or the next one) starts at once.

Preparing a vertebra case (reading a CT and its label map, checking them and
resampling both onto the model's grid) takes seconds to minutes per scan; a
training run repeats it for every case before its first iteration. Here each
case is prepared once and stored as an ``.npz`` file named by a key: the
sha256 of the input files' contents, the settings that shape the result
(the working grid's spacing) and ``PREPARATION_VERSION``. A changed file or
setting gives a new key, so a stale entry is never read. Entries are written
atomically and read without pickles. ``spineseg train ... --prepare-only``
fills the cache for a data set ahead of training.

The cache folder is ``$SPINESEG_CACHE`` if set, else ``$XDG_CACHE_HOME/spineseg``
(``~/.cache/spineseg``), with one subfolder per task.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..cachedir import user_cache_folder
from ..publish import atomic_path

if TYPE_CHECKING:
    from ..vertebrae.sampler import TrainingCase
    from .config import TrainingConfig

__all__ = ["PREPARATION_VERSION", "cache_folder", "case_key", "cached_vertebra_case", "prepare_cases"]

# Bump when the preparation of a case changes (resampling, normalisation, checks): old entries are then unused.
PREPARATION_VERSION = 2  # 2: working grids on a lattice of their spacing, nearest-neighbour ties broken upwards
_HASH_BLOCK = 1 << 22


def cache_folder(task: str) -> Path:
    """Where prepared cases of ``task`` are kept (see the module's description)."""
    return user_cache_folder() / task


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def case_key(files: Iterable[Path], settings: dict) -> str:
    """A name for one prepared case: the hash of its files' contents, ``settings`` and the preparation version."""
    parts = {"files": [_file_digest(Path(path)) for path in files], "settings": settings,
             "version": PREPARATION_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cached_vertebra_case(
    image_path: Path, labels_path: Path, spacing_mm: float, folder: Path | None = None, label_mapping: str = ""
) -> "TrainingCase | None":
    """:func:`~spineseg.training.tasks.vertebrae.case_from_files`, prepared once and then read from the cache.

    ``label_mapping`` (``data.label_mapping``) renumbers the labels first; the numbers it maps are part of the key.

    Returns the :class:`~spineseg.vertebrae.sampler.TrainingCase`, or None for a case that is skipped (L6 or
    T13); the skip is cached too. Errors (unreadable files, bad labels) are raised and not cached.
    """
    from ..vertebrae.sampler import TrainingCase
    from .label_mapping import resolve_mapping
    from .tasks.vertebrae import case_from_files

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


def prepare_cases(config: "TrainingConfig") -> Path:
    """Prepare every case of ``config``'s data set into the cache, with a progress bar; return the cache folder.

    Raises:
        InputError: a task or data set without preparation (disc slabs, phantoms), or a case that cannot be read.
    """
    from tqdm import tqdm

    from ..errors import InputError
    from .config import Layout, Task
    from .datasets import read_dataset

    if config.task is not Task.VERTEBRAE:
        raise InputError(f"--prepare-only prepares vertebra cases; {config.task.value} cases are read as they are")
    split = read_dataset(config.task, config.data, config.seed)
    if split.layout is Layout.PHANTOMS:
        raise InputError("phantoms are generated for each run, not prepared; give --data a folder of CTs")
    for subject in tqdm(split.train + split.validation, desc="preparing CTs", unit="case"):
        cached_vertebra_case(subject.image, subject.labels, config.model.spacing_mm,
                             label_mapping=config.data.label_mapping)
    return cache_folder(Task.VERTEBRAE.value)
