"""Finding, checking and loading model files: safetensors weights plus a JSON manifest.

A model is two files side by side: ``NAME.safetensors`` (weights only, which
load without running code) and ``NAME.json`` (the manifest: task,
architecture, input spacing, patch size, channels, sha256 of the weights,
training data and measured scores). Bundled models are package data in
``spineseg/models`` (found through ``importlib.resources``, so they are there
in a wheel install and in the Slicer extension alike); users pass a name from
there or a path to their own manifest or weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import ModelError

__all__ = [
    "BUNDLED_MODELS_DIR",
    "DEFAULT_MODELS",
    "ModelEntry",
    "find_model",
    "load_state_dict",
    "save_model",
    "sha256_of",
]

BUNDLED_MODELS_DIR = Path(str(resources.files("spineseg") / "models"))
DEFAULT_MODELS = {"vertebrae": "vertebrae-ct-phantom-v4", "discs": "discs-mri-phantom-v2"}


class ModelEntry:
    """A manifest read from disk, with the path of its weights."""

    def __init__(self, manifest: dict, weights_path: Path, manifest_path: Path) -> None:
        self.manifest = manifest
        self.weights_path = weights_path
        self.manifest_path = manifest_path

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.weights_path.stem))

    @property
    def task(self) -> str:
        return str(self.manifest.get("task", ""))

    def __repr__(self) -> str:
        return f"ModelEntry(name={self.name!r}, task={self.task!r}, weights={str(self.weights_path)!r})"


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_model(name_or_path: str | os.PathLike | None, task: str) -> ModelEntry:
    """Resolve a bundled model name, a manifest path or a weights path into a :class:`ModelEntry`.

    Raises:
        ModelError: nothing found, the manifest is unreadable, or it is for another task.
    """
    if task not in DEFAULT_MODELS:
        raise ValueError(f"task must be one of {sorted(DEFAULT_MODELS)}, got {task!r}")
    reference = str(name_or_path) if name_or_path else DEFAULT_MODELS[task]
    path = Path(reference)
    if path.suffix in {".json", ".safetensors"} and path.exists():
        manifest_path = path.with_suffix(".json")
    else:
        manifest_path = BUNDLED_MODELS_DIR / f"{reference}.json"
    if not manifest_path.exists():
        available = sorted(p.stem for p in BUNDLED_MODELS_DIR.glob("*.json"))
        raise ModelError(
            f"model {reference!r} not found: give a bundled name ({', '.join(available) or 'none installed'}) "
            "or the path of a model's .json manifest"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read model manifest {manifest_path}: {error}") from None
    if manifest.get("task") != task:
        raise ModelError(f"model {manifest_path.name} is for task {manifest.get('task')!r}, not {task!r}")
    weights_path = manifest_path.with_name(manifest.get("weights", manifest_path.stem + ".safetensors"))
    return ModelEntry(manifest, weights_path, manifest_path)


def load_state_dict(entry: ModelEntry) -> dict[str, torch.Tensor]:
    """Load the weights of a model after checking their sha256 against the manifest."""
    if not entry.weights_path.exists():
        raise ModelError(f"weights file missing: {entry.weights_path}")
    expected = entry.manifest.get("sha256")
    if expected and sha256_of(entry.weights_path) != expected:
        raise ModelError(
            f"{entry.weights_path.name} does not match the sha256 in its manifest: the file is corrupt or was replaced"
        )
    try:
        return load_file(str(entry.weights_path))
    except Exception as error:  # safetensors raises its own error types
        raise ModelError(f"cannot load weights {entry.weights_path}: {error}") from None


def save_model(state_dict: dict[str, torch.Tensor], manifest: dict, directory: str | os.PathLike, name: str) -> ModelEntry:
    """Write ``name.safetensors`` and ``name.json`` atomically; the manifest gains the sha256."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / f"{name}.safetensors"
    manifest_path = directory / f"{name}.json"
    temporary = weights_path.with_name(f".partial-{weights_path.name}")
    save_file({key: value.detach().cpu().contiguous() for key, value in state_dict.items()}, str(temporary))
    os.replace(temporary, weights_path)
    manifest = {**manifest, "name": name, "weights": weights_path.name, "sha256": sha256_of(weights_path)}
    temporary = manifest_path.with_name(f".partial-{manifest_path.name}")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, manifest_path)
    return ModelEntry(manifest, weights_path, manifest_path)
