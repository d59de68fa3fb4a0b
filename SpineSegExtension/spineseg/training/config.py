"""The training configuration: typed sections, read from JSON or TOML plus ``key=value`` overrides.

A run's configuration starts from the task's defaults, then a file (JSON or
TOML, any subset of the keys) is merged in, then command-line overrides such
as ``optimiser.learning_rate=3e-4`` or ``schedule.milestones=[0.6,0.9]``
(values are read as JSON, and as plain strings when that fails). Unknown
keys, wrong types and impossible values raise one :class:`InputError` naming
the key. The fully resolved configuration is written to ``RUNDIR/config.json``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..choices import DeviceChoice, Task
from ..errors import InputError
from ..publish import atomic_path
from .vertebra_sampler import SamplerConfig

__all__ = [
    "Task",
    "Layout",
    "OptimiserName",
    "ScheduleKind",
    "DataConfig",
    "VertebraModelConfig",
    "VertebraLossConfig",
    "DiscModelConfig",
    "DiscLossConfig",
    "DiscSamplerConfig",
    "OptimiserConfig",
    "ScheduleConfig",
    "ValidationConfig",
    "AveragingConfig",
    "TrainingConfig",
    "default_config",
    "load_config",
    "recipe_of",
    "config_from_dict",
    "config_to_dict",
    "save_config",
]


class Layout(enum.StrEnum):
    """How a data folder is organised (see :mod:`spineseg.training.datasets`)."""

    AUTO = "auto"
    VERSE = "verse"
    PAIRS = "pairs"
    BIDS = "bids"
    PHANTOMS = "phantoms"


class OptimiserName(enum.StrEnum):
    ADAM = "adam"
    RMSPROP = "rmsprop"
    SGD = "sgd"


class ScheduleKind(enum.StrEnum):
    CONSTANT = "constant"
    STEP = "step"  # multiply by ``gamma`` at each milestone (fractions of the run)
    COSINE = "cosine"  # cosine from the learning rate down to ``final_fraction`` of it


@dataclass
class DataConfig:
    """Where the training data come from and how subjects are split."""

    path: str = "phantoms"  # a data folder, or "phantoms" for generated ones
    layout: Layout = Layout.AUTO
    phantoms: int = 40  # training phantoms (layout "phantoms")
    validation_phantoms: int = 4  # separate validation phantoms (layout "phantoms")
    validation_fraction: float = 0.2  # of the subjects of a data folder
    # A VerSe vertebra label map whose real shapes stand in for the analytic ones in part of the training
    # phantoms (layout "phantoms"; validation phantoms stay analytic); "" = analytic shapes only.
    real_shapes: str = ""
    # The numbering of the data folder's label maps when it is not VerSe's: a preset ("totalsegmentator"),
    # FROM:TO pairs or a from,to CSV file (see spineseg.training.label_mapping); "" = VerSe numbers already.
    label_mapping: str = ""
    # Real labelled CTs mixed into a phantom run (layout "phantoms"): each a data folder (VerSe or images/labels
    # layout) or a pair "IMAGE,LABELS" of files; their label maps are renumbered by ``label_mapping``.
    real_cases: list[str] = field(default_factory=list)
    # Share of training patches drawn from ``real_cases`` (the rest from the phantoms); the same augmentation
    # applies to both.
    real_share: float = 0.0
    # Whether the real cases also teach the level head (false: their patches train masks and completeness only,
    # and the levels are learnt from the phantoms' variety of levels and fields of view).
    real_levels: bool = True


@dataclass
class VertebraModelConfig:
    """Iterative FCN size and input grid (the patch size is ``sampler.patch_size``)."""

    spacing_mm: float = 3.0
    filters: int = 16
    levels: int = 4
    initial_weights: str | None = None  # start from a model (bundled name or manifest/weights path); None = random


@dataclass
class VertebraLossConfig:
    fp_fn_weight: float = 1.0
    level_weight: float = 0.2


@dataclass
class DiscModelConfig:
    """Attention hourglass size, slab size and heatmap width."""

    features: int = 48
    stacks: int = 2
    depth: int = 4
    input_size: int = 256
    sigma: float = 1.25  # heatmap Gaussian width in output pixels
    initial_weights: str | None = None  # start from a model (bundled name or manifest/weights path); None = random


@dataclass
class DiscLossConfig:
    foreground_weight: float = 0.0  # 0 = the published plain MSE


@dataclass
class DiscSamplerConfig:
    augmentation_strength: float = 1.0  # 0 = no augmentation, 1 = rotation 12 deg, scale 0.8-1.2, ...
    # Share of phantom slabs drawn anew from their generation classes with a random contrast (mri_appearance).
    synthetic_probability: float = 0.0
    # Phantoms with what real scans vary: the head, narrow and wide fields of view, degenerate discs.
    phantom_variety: bool = False
    # Phantoms with what real lumbar exams vary at the lumbosacral junction: sacral slopes, S1/S2-S3/S4 remnant
    # discs, a curved lower sacrum, narrowed dark L4/L5 and L5/S1, a bladder (spineseg.phantoms.mri).
    lumbosacral_variety: bool = False


@dataclass
class OptimiserConfig:
    name: OptimiserName = OptimiserName.ADAM
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # RMSprop and SGD only


@dataclass
class ScheduleConfig:
    kind: ScheduleKind = ScheduleKind.STEP
    milestones: list[float] = field(default_factory=lambda: [0.8])
    gamma: float = 0.3
    final_fraction: float = 0.01


@dataclass
class ValidationConfig:
    interval: int = 500  # iterations between validations (a multiple of log_interval)
    patches: int = 32  # vertebrae: fixed validation patches
    scans: int = 0  # vertebrae: validation cases also segmented whole; when > 0, their mean Dice is the score
    real_folder: str = ""  # folder of the real validation scans (../shared/data/real); "" = none. Never trained on.
    # Discs: read each real scan again under every spineseg.evaluation.real_mris.PERTURBATIONS change (tilted,
    # resized, re-contrasted) and score the mean, so that the export is not chosen on one lucky reading.
    real_perturbed: bool = False


@dataclass
class AveragingConfig:
    """Average the weights of the last ``snapshots`` snapshots, ``interval`` iterations apart (0 = off)."""

    snapshots: int = 0
    interval: int = 500


@dataclass
class TrainingConfig:
    """Everything that decides a training run."""

    task: Task
    name: str
    model: VertebraModelConfig | DiscModelConfig
    loss: VertebraLossConfig | DiscLossConfig
    sampler: SamplerConfig | DiscSamplerConfig
    seed: int = 0
    iterations: int = 3000
    epochs: float | None = None  # when set, replaces iterations: passes over the training subjects
    batch_size: int = 1  # per process
    log_interval: int = 50
    checkpoint_interval: int = 500  # a multiple of log_interval
    device: str = "auto"  # auto, cpu, cuda
    amp: bool = True  # mixed precision, used on CUDA only
    threads: int = 0  # torch CPU threads, 0 = torch's default
    data: DataConfig = field(default_factory=DataConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)

    def total_iterations(self, training_subjects: int, world_size: int = 1) -> int:
        """Iterations of the run: ``iterations``, or ``epochs`` passes over the subjects when set."""
        if self.epochs is None:
            return self.iterations
        per_epoch = -(-training_subjects // (self.batch_size * world_size))
        return max(1, round(self.epochs * per_epoch))


# The task-specific sections and the defaults that differ between tasks.
_TASK_SECTIONS: dict[Task, dict[str, type]] = {
    Task.VERTEBRAE: {"model": VertebraModelConfig, "loss": VertebraLossConfig, "sampler": SamplerConfig},
    Task.DISCS: {"model": DiscModelConfig, "loss": DiscLossConfig, "sampler": DiscSamplerConfig},
}
_TASK_DEFAULTS: dict[Task, dict[str, Any]] = {
    Task.VERTEBRAE: {"name": "vertebrae-model", "iterations": 3000, "batch_size": 1},
    Task.DISCS: {
        "name": "discs-model",
        "iterations": 20000,
        "batch_size": 6,
        "data": {"phantoms": 200, "validation_phantoms": 16},
        "optimiser": {"name": "rmsprop", "learning_rate": 2.5e-4},
        "schedule": {"kind": "cosine"},
        "validation": {"interval": 1000},
    },
}


def _parse_task(task: str | Task) -> Task:
    try:
        return Task(str(task))
    except ValueError:
        raise InputError(f"task must be one of {[t.value for t in Task]}, got {task!r}") from None


def default_config(task: str | Task) -> TrainingConfig:
    """The defaults of a task (the published settings where there are any)."""
    task = _parse_task(task)
    sections = {name: section() for name, section in _TASK_SECTIONS[task].items()}
    values = config_to_dict(TrainingConfig(task=task, name=task.value, **sections))
    _merge(values, _TASK_DEFAULTS[task], "defaults")
    return config_from_dict(values)


def recipe_of(model: str, task: str | Task) -> dict:
    """The settings ``model`` was trained with (its manifest's ``training.config``), to fine-tune it: how it was
    trained (network size, loss, sampler and augmentations, optimiser, schedule, validation cadence), starting
    from its weights, without what it was trained on (data, name, the developers' real validation folder).

    Raises:
        ModelError: no such model. InputError: its manifest records no recipe.
    """
    from ..model_store import find_model

    entry = find_model(model, task)
    recipe = (entry.manifest.get("training") or {}).get("config")
    if not isinstance(recipe, dict):
        raise InputError(f"model {entry.name} records no training recipe in its manifest; fine-tune it with "
                         f"--set model.initial_weights={model} and the settings you choose")
    recipe = json.loads(json.dumps(recipe))
    for key in ("task", "name", "data", "epochs"):
        recipe.pop(key, None)
    recipe.get("validation", {}).pop("real_folder", None)
    recipe.setdefault("model", {})["initial_weights"] = str(model)
    return recipe


def load_config(task: str | Task, path: str | Path | None = None, overrides: Iterable[str] = (),
                recipe: dict | None = None) -> TrainingConfig:
    """Task defaults, then a model's ``recipe`` (see :func:`recipe_of`), then the file at ``path`` (JSON or
    TOML), then ``key=value`` overrides."""
    values = config_to_dict(default_config(task))
    if recipe is not None:
        _merge(values, recipe, "the model's training recipe")
    if path is not None:
        from_file = _read_file(Path(path))
        if from_file.get("task", values["task"]) != values["task"]:
            raise InputError(f"{path} is a configuration for task {from_file['task']!r}, not {values['task']!r}")
        _merge(values, from_file, str(path))
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key.strip():
            raise InputError(f"an override must look like key.sub=value, got {override!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        nested: dict = {}
        cursor = nested
        *parents, last = key.strip().split(".")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[last] = value
        _merge(values, nested, f"override {override!r}")
    return config_from_dict(values)


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"configuration file not found: {path}")
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(path.read_text())
        values = json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the configuration {path} (JSON, or TOML with a .toml name): {error}") from None
    if not isinstance(values, dict):
        raise InputError(f"the configuration {path} must hold an object of settings, got {type(values).__name__}")
    return values


def _merge(target: dict, source: dict, origin: str, prefix: str = "") -> None:
    """Copy ``source`` into ``target``; every key must already exist there."""
    for key, value in source.items():
        name = prefix + key
        if key not in target:
            raise InputError(f"{origin}: unknown setting {name!r}; known here: {', '.join(sorted(target))}")
        if isinstance(target[key], dict):
            if not isinstance(value, dict):
                raise InputError(f"{origin}: {name!r} is a section; set its keys ({', '.join(sorted(target[key]))})")
            _merge(target[key], value, origin, name + ".")
        else:
            target[key] = value


def _convert(value: Any, kind: Any, name: str) -> Any:
    """Check and convert one value to the annotated type; dataclasses recurse."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise InputError(f"config: {name} must be a section, got {value!r}")
        return _build(kind, value, name + ".")
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (single,) = [option for option in options if option is not type(None)]
        return _convert(value, single, name)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise InputError(f"config: {name} must be a list, got {value!r}")
        return [_convert(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise InputError(f"config: {name} must be one of {[m.value for m in kind]}, got {value!r}") from None
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise InputError(f"config: {name} must be {kind.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict, prefix: str, sections: dict[str, type] | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"config: unknown setting(s) {', '.join(prefix + k for k in unknown)} in {prefix or 'top level'}")
    converted = {}
    for name, value in values.items():
        kind = (sections or {}).get(name, hints[name])
        converted[name] = _convert(value, kind, prefix + name)
    try:
        return cls(**converted)
    except TypeError as error:
        raise InputError(f"config: {prefix or 'top level'} is incomplete: {error}") from None


def config_from_dict(values: dict) -> TrainingConfig:
    """Build and validate a configuration from a (complete or partial) nested dict."""
    if "task" not in values:
        raise InputError("config: 'task' is missing (vertebrae or discs)")
    task = _parse_task(values["task"])
    config = _build(TrainingConfig, values, "", _TASK_SECTIONS[task])
    _validate(config)
    return config


def _validate(config: TrainingConfig) -> None:
    """Refuse values that cannot work, each with the key that holds it."""
    problems = []

    def require(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    require(bool(config.name) and "/" not in config.name, f"name must be a plain file name, got {config.name!r}")
    require(config.iterations >= 1, f"iterations must be at least 1, got {config.iterations}")
    require(config.epochs is None or config.epochs > 0, f"epochs must be positive, got {config.epochs}")
    require(config.batch_size >= 1, f"batch_size must be at least 1, got {config.batch_size}")
    require(config.log_interval >= 1, f"log_interval must be at least 1, got {config.log_interval}")
    for key, interval in [("checkpoint_interval", config.checkpoint_interval),
                          ("validation.interval", config.validation.interval)]:
        require(interval >= 1 and interval % config.log_interval == 0,
                f"{key} must be a positive multiple of log_interval ({config.log_interval}), got {interval}")
    require(config.device in set(DeviceChoice), f"device must be one of {', '.join(DeviceChoice)}, got {config.device!r}")
    require(config.threads >= 0, f"threads must be 0 (torch's default) or more, got {config.threads}")
    require(config.data.phantoms >= 1, f"data.phantoms must be at least 1, got {config.data.phantoms}")
    require(config.data.validation_phantoms >= 0, "data.validation_phantoms must be 0 or more")
    require(0.0 <= config.data.real_share <= 1.0, f"data.real_share must be in [0, 1], got {config.data.real_share}")
    if config.data.real_cases or config.data.real_share > 0:
        require(config.data.path == "phantoms" or config.data.layout is Layout.PHANTOMS,
                "data.real_cases mixes real CTs into a phantom run; for a run on real CTs alone give them as "
                "data.path (--data)")
        require(bool(config.data.real_cases) == (config.data.real_share > 0),
                "data.real_cases and data.real_share go together: name the real CTs (--real) and the share of "
                "patches drawn from them (--real-share)")
    require(0.0 <= config.data.validation_fraction < 1.0,
            f"data.validation_fraction must be in [0, 1), got {config.data.validation_fraction}")
    require(config.optimiser.learning_rate > 0, f"optimiser.learning_rate must be positive, got {config.optimiser.learning_rate}")
    require(config.optimiser.weight_decay >= 0, "optimiser.weight_decay must be 0 or more")
    require(all(0 < m < 1 for m in config.schedule.milestones),
            f"schedule.milestones must be fractions of the run in (0, 1), got {config.schedule.milestones}")
    require(0 < config.schedule.gamma <= 1, f"schedule.gamma must be in (0, 1], got {config.schedule.gamma}")
    require(0 <= config.schedule.final_fraction <= 1, "schedule.final_fraction must be in [0, 1]")
    require(config.validation.patches >= 1, f"validation.patches must be at least 1, got {config.validation.patches}")
    require(config.averaging.snapshots >= 0, f"averaging.snapshots must be 0 or more, got {config.averaging.snapshots}")
    require(config.averaging.interval >= 1, f"averaging.interval must be at least 1, got {config.averaging.interval}")
    for setting in dataclasses.fields(config.sampler):
        if setting.name.endswith("_probability"):
            value = getattr(config.sampler, setting.name)
            require(0.0 <= value <= 1.0, f"sampler.{setting.name} must be in [0, 1], got {value}")
    if isinstance(config.model, VertebraModelConfig):
        divisor = 2 ** (config.model.levels - 1)
        require(config.model.spacing_mm > 0, f"model.spacing_mm must be positive, got {config.model.spacing_mm}")
        require(config.model.filters >= 1 and config.model.levels >= 2, "model.filters must be >= 1 and model.levels >= 2")
        require(config.sampler.patch_size >= divisor and config.sampler.patch_size % divisor == 0,
                f"sampler.patch_size must be a multiple of {divisor} (2 ** (model.levels - 1)), got {config.sampler.patch_size}")
        require(config.data.layout in (Layout.AUTO, Layout.VERSE, Layout.PAIRS, Layout.PHANTOMS),
                f"data.layout for vertebrae must be auto, verse, pairs or phantoms, got {config.data.layout.value}")
        if config.data.label_mapping:
            from .label_mapping import resolve_mapping

            try:
                resolve_mapping(config.data.label_mapping)
            except InputError as error:
                problems.append(f"data.label_mapping: {error}")
    else:
        divisor = 4 * 2**config.model.depth
        require(config.model.features >= 2 and config.model.features % 2 == 0, "model.features must be even and >= 2")
        require(config.model.stacks >= 1 and config.model.depth >= 1, "model.stacks and model.depth must be >= 1")
        require(config.model.input_size >= divisor and config.model.input_size % divisor == 0,
                f"model.input_size must be a multiple of {divisor} (4 * 2 ** model.depth), got {config.model.input_size}")
        require(config.model.sigma > 0, f"model.sigma must be positive, got {config.model.sigma}")
        require(config.data.layout in (Layout.AUTO, Layout.BIDS, Layout.PAIRS, Layout.PHANTOMS),
                f"data.layout for discs must be auto, bids, pairs or phantoms, got {config.data.layout.value}")
        require(not config.data.label_mapping, "data.label_mapping renumbers vertebra label maps; disc labels are "
                                               "points in Spinal Cord Toolbox numbering")
    if problems:
        raise InputError("config: " + "; ".join(problems))


def config_to_dict(config: TrainingConfig) -> dict:
    """Plain nested dict (enums as strings), the form written to ``config.json``."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def save_config(config: TrainingConfig, path: str | Path) -> None:
    """Write the resolved configuration as JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
