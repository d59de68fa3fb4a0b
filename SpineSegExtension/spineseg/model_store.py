"""Finding, checking and loading model files: safetensors weights plus a JSON manifest.

A model is two files side by side: ``NAME.safetensors`` (weights only, which
load without running code) and ``NAME.json`` (the manifest: ``task``,
``architecture`` (``type``: the network class, and its settings), ``input``
(the input geometry), channels, sha256 of the weights, training data and
measured scores; one layout for every task). Bundled models are package data in
``spineseg/models`` (found through ``importlib.resources``, so they are there
in a wheel install and in the Slicer extension alike); users pass a name from
there or a path to their own manifest or weights. :func:`load_model` is the one
way both tasks turn such a reference into a ready model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import tasks
from .choices import DeviceChoice
from .errors import ModelError

if TYPE_CHECKING:  # torch loads with the first model, not with this module
    import torch

    from .networks.loaded import LoadedModel

__all__ = [
    "BUNDLED_MODELS_DIR",
    "ModelCard",
    "ModelEntry",
    "find_model",
    "list_models",
    "model_summary",
    "read_card",
    "load_model",
    "load_state_dict",
    "save_model",
    "sha256_of",
]

BUNDLED_MODELS_DIR = Path(str(resources.files("spineseg") / "models"))


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

    def provenance(self) -> dict[str, Any]:
        """What an output file records about the model that made it."""
        return {"name": self.name, "version": self.manifest.get("version"), "sha256": self.manifest.get("sha256")}

    def __repr__(self) -> str:
        return f"ModelEntry(name={self.name!r}, task={self.task!r}, weights={str(self.weights_path)!r})"


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file's contents, read in blocks (weights in manifests, keys of prepared training cases)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_model(name_or_path: str | os.PathLike | None, task: tasks.TaskSpec | str) -> ModelEntry:
    """Resolve a bundled model name, a manifest path or a weights path into a :class:`ModelEntry`.

    None is the task's default model. A bundled name is a plain name (no folders); anything else must be an
    existing ``.json`` manifest or ``.safetensors`` file, whose manifest sits
    beside it. The manifest's ``weights`` must name a file in the manifest's
    own folder.

    Raises:
        ModelError: nothing found, the manifest is unreadable or malformed, or it is for another task.
    """
    spec = tasks.get(task)
    reference = str(name_or_path) if name_or_path else spec.default_model
    path = Path(reference)
    if path.suffix in {".json", ".safetensors"} and path.is_file():
        manifest_path = path.with_suffix(".json")
    elif path.name == reference and reference not in {".", ".."}:
        manifest_path = BUNDLED_MODELS_DIR / f"{reference}.json"
    else:
        manifest_path = None
    if manifest_path is None or not manifest_path.is_file():
        available = sorted(p.stem for p in BUNDLED_MODELS_DIR.glob("*.json") if not p.stem.endswith("-history"))
        raise ModelError(
            f"model {reference!r} not found: give a bundled name ({', '.join(available) or 'none installed'}) "
            "or the path of a model's .json manifest or .safetensors weights"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read model manifest {manifest_path}: {error}") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"model manifest {manifest_path} must hold a JSON object, not {type(manifest).__name__}")
    if manifest.get("task") != spec.name:
        raise ModelError(f"model {manifest_path.name} is for task {manifest.get('task')!r}, not {spec.name!r}")
    if spec.current_layout is not None:  # a model trained with an earlier version keeps loading
        manifest = spec.load("current_layout")(dict(manifest))
    weights_name = manifest.get("weights", manifest_path.stem + ".safetensors")
    if not isinstance(weights_name, str) or Path(weights_name).name != weights_name or weights_name in {"", ".", ".."}:
        raise ModelError(f"model manifest {manifest_path} names weights {weights_name!r}; it must be a file name "
                         "in the manifest's own folder")
    return ModelEntry(manifest, manifest_path.with_name(weights_name), manifest_path)


def load_state_dict(entry: ModelEntry) -> "dict[str, torch.Tensor]":
    """Load the weights of a model after checking their sha256 against the manifest.

    Raises:
        ModelError: the weights are missing, not a regular file, unhashed, altered or unreadable.
    """
    if not entry.weights_path.is_file():
        raise ModelError(f"weights file missing (or not a regular file): {entry.weights_path}")
    expected = entry.manifest.get("sha256")
    if not isinstance(expected, str) or not expected:
        raise ModelError(f"model manifest {entry.manifest_path} has no sha256 of its weights; "
                         "re-export the model with `spineseg train` or add the hash")
    if sha256_of(entry.weights_path) != expected:
        raise ModelError(
            f"{entry.weights_path.name} does not match the sha256 in its manifest: the file is corrupt or was replaced"
        )
    from safetensors.torch import load_file

    try:
        return load_file(str(entry.weights_path))
    except Exception as error:  # safetensors raises its own error types
        raise ModelError(f"cannot load weights {entry.weights_path}: {error}") from None


def load_model(
    task: tasks.TaskSpec | str,
    model: "str | os.PathLike | LoadedModel | None" = None,
    device: DeviceChoice | str = DeviceChoice.AUTO,
) -> "LoadedModel":
    """The model a task runs: a loaded model is passed through, anything else is found and loaded.

    The task's spec names the model, settings and network classes; the manifest's ``architecture.type`` must
    name that network, ``architecture`` holds its settings and ``input`` the input geometry.

    Args:
        task: which task's model (its name or spec).
        model: None (the task's default), a bundled name, a manifest or weights path, or a loaded model.
        device: where to run a model loaded here.

    Raises:
        ModelError: the model cannot be found, is for another task, or its weights do not fit its manifest.
    """
    from .networks.loaded import LoadedModel

    spec = tasks.get(task)
    model_class, settings_class, network_class = (spec.load(name) for name in
                                                  ("model_class", "settings_class", "network_class"))
    if isinstance(model, LoadedModel):
        if not isinstance(model, model_class):
            raise ModelError(f"a {type(model).__name__} cannot run the {spec.name} task")
        return model
    entry = find_model(model, spec)
    architecture = entry.manifest.get("architecture")
    named = architecture.get("type") if isinstance(architecture, dict) else architecture
    if named != network_class.__name__:
        raise ModelError(f"manifest {entry.manifest_path.name} names the architecture {named!r}; the {spec.name} "
                         f"task runs {network_class.__name__!r}")
    try:
        settings = settings_class.from_manifest(entry.manifest)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise ModelError(f"manifest {entry.manifest_path.name} lacks valid input settings: {error}") from None
    try:
        network = network_class(settings.network)
        network.load_state_dict(load_state_dict(entry))
    except (RuntimeError, ValueError, MemoryError) as error:
        raise ModelError(f"weights of {entry.name} do not fit the architecture in its manifest: "
                         f"{str(error).splitlines()[0]}") from None
    return model_class(network, settings, device, entry)


def save_model(state_dict: "dict[str, torch.Tensor]", manifest: dict, directory: str | os.PathLike, name: str) -> ModelEntry:
    """Write ``name.safetensors``, then ``name.json`` (each atomically, :func:`spineseg.publish.atomic_path`); the
    manifest gains the sha256 of the weights, so a manifest never names weights that are not complete."""
    from safetensors.torch import save_file

    from .publish import atomic_path

    directory = Path(directory)
    weights_path = directory / f"{name}.safetensors"
    manifest_path = directory / f"{name}.json"
    with atomic_path(weights_path) as temporary:
        save_file({key: value.detach().cpu().contiguous() for key, value in state_dict.items()}, str(temporary))
    manifest = {**manifest, "name": name, "weights": weights_path.name, "sha256": sha256_of(weights_path)}
    with atomic_path(manifest_path) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    return ModelEntry(manifest, weights_path, manifest_path)


@dataclass(frozen=True)
class ModelCard:
    """What a model's card (``NAME.md`` beside its manifest) tells a user before they trust a result.

    Attributes:
        summary: one line on what the model is (the card title's parenthesis, or its first phrase).
        caveat: the card's bold **Status** paragraph (or its first known limit): how far to trust it.
        path: the card file.
    """

    summary: str
    caveat: str
    path: Path


def _plain(text: str) -> str:
    """Markdown emphasis and line breaks removed, spaces collapsed."""
    return " ".join(text.replace("**", "").replace("`", "").split())


def read_card(entry: ModelEntry) -> ModelCard | None:
    """The card beside a model's manifest, or None when the model has none (a user's own model)."""
    path = entry.manifest_path.with_suffix(".md")
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    title = paragraphs[0].lstrip("#").strip() if paragraphs else entry.name
    in_title = re.search(r"\((.*)\)\s*$", title)
    body = [p for p in paragraphs[1:] if not p.startswith("#")]
    summary = _plain(in_title.group(1)) if in_title else _plain(body[0]).split(":")[0] if body else entry.name
    status = re.search(r"\*\*Status:\s*(.*?)\*\*", text, re.S)
    if status:
        caveat = _plain(status.group(1))
    else:  # no status paragraph: the first of the card's known limits
        limits = re.search(r"^#+ (?:Known limits|Where it fails).*?\n\s*\n(.*?)(?:\n\s*\n|\Z)", text, re.S | re.M)
        first = re.split(r"\n\s*[*-] ", "\n" + limits.group(1))[1] if limits else ""
        caveat = _plain(first) if first else f"no status given: read {path.name}"
    return ModelCard(summary, caveat, path)


def list_models(task: tasks.TaskSpec | str | None = None, folders: "list[str | os.PathLike]" = ()) -> list[ModelEntry]:
    """The models SpineSeg can load: the bundled ones, then those in ``folders`` (searched recursively, e.g. a
    training run's folder), each with a manifest naming a task and its weights' sha256; sorted by task and name."""
    found: list[ModelEntry] = []
    for folder, pattern in [(BUNDLED_MODELS_DIR, "*.json"), *((Path(f), "**/*.json") for f in folders)]:
        for path in sorted(Path(folder).glob(pattern)):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(manifest, dict) or manifest.get("task") not in tasks.names():
                continue
            if "sha256" not in manifest or (task is not None and manifest["task"] != tasks.get(task).name):
                continue
            entry = find_model(path, manifest["task"])
            if entry.weights_path.is_file():
                found.append(entry)
    return sorted(found, key=lambda e: (e.task, e.manifest_path.parent != BUNDLED_MODELS_DIR, e.name))


def model_summary(entry: ModelEntry) -> str:
    """One line on a model: its card's summary, or for a model of one's own (no card) what its manifest says it
    was trained on and from."""
    card = read_card(entry)
    if card is not None:
        return card.summary
    training = entry.manifest.get("training") or {}
    start = (training.get("initial_weights") or {}).get("model")
    steps = training.get("iterations")
    parts = [f"{steps} iterations" if steps else "", f"from {start}" if start else "",
             f"on {training['data']}" if training.get("data") else ""]
    return "trained with spineseg train: " + ", ".join(part for part in parts if part) if any(parts) else "no card"
