"""An on-disk cache of prepared training cases, so that a run (or the next one) starts at once.

Preparing a vertebra case (reading a CT and its label map, checking them and
resampling both onto the model's grid) takes seconds to minutes per scan; a
training run repeats it for every case before its first iteration. Here each
case is prepared once and stored as an ``.npz`` file named by a key: the
sha256 of the input files' contents, the settings that shape the result
(the working grid's spacing) and ``PREPARATION_VERSION``. A changed file or
setting gives a new key, so a stale entry is never read. Entries are written
atomically and read without pickles by the task that prepares them
(:func:`~spineseg.training.tasks.vertebrae.cached_vertebra_case`); ``spineseg train ... --prepare-only``
fills the cache for a data set ahead of training.

The cache folder is ``$SPINESEG_CACHE`` if set, else ``$XDG_CACHE_HOME/spineseg``
(``~/.cache/spineseg``), with one subfolder per task.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from ..cachedir import user_cache_folder
from ..model_store import sha256_of

__all__ = ["PREPARATION_VERSION", "cache_folder", "case_key"]

# Bump when the preparation of a case changes (resampling, normalisation, checks): old entries are then unused.
PREPARATION_VERSION = 2  # 2: working grids on a lattice of their spacing, nearest-neighbour ties broken upwards


def cache_folder(task: str) -> Path:
    """Where prepared cases of ``task`` are kept (see the module's description)."""
    return user_cache_folder() / task


def case_key(files: Iterable[Path], settings: dict) -> str:
    """A name for one prepared case: the hash of its files' contents, ``settings`` and the preparation version."""
    parts = {"files": [sha256_of(path) for path in files], "settings": settings,
             "version": PREPARATION_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
