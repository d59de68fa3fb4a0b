"""The training loop shared by both tasks: resumable, validated, on one device or many.

A task adapter (:class:`~.tasks.TrainingTask`, picked from the table in
:mod:`.tasks`) supplies the network, batches, loss, validation metrics and
the model manifest; this module does the rest:

* run folder: ``config.json`` (resolved configuration), ``split.json``
  (cases per side), ``metrics.csv`` and ``metrics.png``, ``checkpoints/``,
  ``best.safetensors`` (best validation score), ``snapshots/`` (for weight
  averaging), and ``model/NAME.safetensors`` + ``NAME.json``, the exported model;
* a checkpoint every ``checkpoint_interval`` iterations and at the end;
  ``resume=True`` continues from the latest one exactly (same weights as an
  uninterrupted run with the same seed);
* ``model.initial_weights``: start from the weights of a model (fine-tuning)
  instead of random ones; the architecture must match;
* mixed precision (float16 autocast with gradient scaling) on CUDA;
* DistributedDataParallel when launched by torchrun; each process draws its
  own batches (sampler seeded with ``seed + 1 + rank``), gradients are
  averaged, the first process validates and writes the run folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..errors import InputError, SpineSegError
from ..model_store import ModelEntry, find_model, load_state_dict, save_model
from ..progress import ProgressCallback, no_progress
from ..publish import lock_file
from .checkpoint import (Checkpoint, has_checkpoint, load_weights, read_latest_checkpoint, require_checkpoint,
                         save_weights, write_checkpoint)
from .config import OptimiserName, ScheduleKind, TrainingConfig, config_to_dict, save_config
from .datasets import DataSplit, check_split, read_dataset, save_split
from .distributed import Processes, barrier, gather, start_processes, stop_processes
from .history import MetricsLog
from .tasks import TrainingTask, build_task

__all__ = ["TrainingResult", "check_finite_loss", "learning_rate_at", "build_optimiser", "average_weights", "train"]

log = logging.getLogger(__name__)

RUN_LOCK = ".lock"  # held by the training that uses the run folder (released however it ends)
PLOT_INTERVAL_S = 60.0  # metrics.png is redrawn at checkpoints at most this often, and at the end


@dataclass
class TrainingResult:
    """What a finished run produced."""

    run_dir: Path
    model: ModelEntry
    iterations: int
    scores: dict[str, float] | None


def check_finite_loss(loss: torch.Tensor, iteration: int) -> None:
    """Stop the run on a NaN or infinite loss: every later step would be NaN too, and the exported model useless.

    Raises:
        SpineSegError: naming the iteration (the checkpoints written before it are kept).
    """
    if not bool(torch.isfinite(loss.detach()).all()):
        raise SpineSegError(f"training stopped at iteration {iteration}: the loss is {float(loss.detach())}; "
                            "check the training labels (whole disc or vertebra numbers) and the learning rate")


def learning_rate_at(config: TrainingConfig, iteration: int, total: int) -> float:
    """Learning rate of (0-based) ``iteration`` of ``total``; a pure function, so resuming needs no scheduler state."""
    base = config.optimiser.learning_rate
    schedule = config.schedule
    if schedule.kind is ScheduleKind.STEP:
        passed = sum(iteration >= int(m * total) for m in schedule.milestones)
        return base * schedule.gamma**passed
    if schedule.kind is ScheduleKind.COSINE:
        floor = schedule.final_fraction * base
        return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * iteration / total))
    return base


def build_optimiser(config: TrainingConfig, parameters) -> torch.optim.Optimizer:
    """Adam, RMSprop or SGD with the configured learning rate, weight decay and momentum."""
    settings = config.optimiser
    if settings.name is OptimiserName.ADAM:
        return torch.optim.Adam(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    if settings.name is OptimiserName.RMSPROP:
        return torch.optim.RMSprop(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                   momentum=settings.momentum)
    return torch.optim.SGD(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                           momentum=settings.momentum)


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of several state dicts; integer buffers (batch-norm counters) come from the last one."""
    if not states:
        raise ValueError("average_weights needs at least one state dict")
    averaged = {}
    for name, last in states[-1].items():
        if last.is_floating_point():
            averaged[name] = torch.stack([s[name].double() for s in states]).mean(dim=0).to(last.dtype)
        else:
            averaged[name] = last.clone()
    return averaged


def _load_initial_weights(config: TrainingConfig, network: nn.Module) -> ModelEntry | None:
    """Load ``model.initial_weights`` (a model name or path, see :func:`find_model`) into ``network``.

    Returns:
        The model the weights came from, or None when the run starts from random weights.

    Raises:
        ModelError: the model cannot be found or read. InputError: its architecture differs.
    """
    reference = config.model.initial_weights
    if not reference:
        return None
    entry = find_model(reference, config.task.value)
    try:
        network.load_state_dict(load_state_dict(entry))
    except RuntimeError as error:
        raise InputError(f"model.initial_weights: {entry.weights_path} does not fit the configured network "
                         f"(check the model section against its manifest): {error}") from None
    return entry


def _prepare_run_dir(config: TrainingConfig, run_dir: Path, split: DataSplit, resume: bool) -> IO[bytes] | None:
    """Lock the run folder for this training, then check the split (resume) or write config and split (start).

    A folder without a checkpoint (a start that failed on its data, or was
    killed early) may be started afresh, so no run folder needs deleting by hand.

    Returns:
        The open lock file; the folder is this training's until it is closed.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_file(run_dir / RUN_LOCK)
    if lock is None:
        raise InputError(f"{run_dir} is in use by another training; wait for it to end or choose another folder")
    try:
        if resume:
            check_split(split, run_dir / "split.json")
        elif has_checkpoint(run_dir / "checkpoints"):
            raise InputError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another "
                             "folder")
        else:
            save_config(config, run_dir / "config.json")
            save_split(split, run_dir / "split.json")
    except BaseException:
        lock.close()
        raise
    return lock


def _hardware(processes: Processes) -> str:
    if processes.device.type == "cuda":
        name = torch.cuda.get_device_name(processes.device)
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"
    return f"{processes.world_size} process(es), {name}"


def train(
    config: TrainingConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    progress: ProgressCallback = no_progress,
) -> TrainingResult | None:
    """Train a network for ``config`` in ``run_dir`` and export the model.

    Args:
        config: the resolved configuration (on resume, the one stored in ``run_dir``).
        run_dir: the run folder (created); must not hold a checkpoint unless ``resume``, nor be in use.
        resume: continue from the latest checkpoint in ``run_dir``.
        show_progress: draw a progress bar with loss and ETA on stderr.
        progress: callback (fraction, message) at every log interval; may raise
            :class:`~spineseg.errors.CancelledError` (the last checkpoint stays).

    Returns:
        The exported model and its scores, on the first process; None on the others.

    Raises:
        InputError: bad data, a run folder already in use, or nothing to resume.
    """
    run_dir = Path(run_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    processes = start_processes(config.device)
    try:
        return _train(config, run_dir, resume, show_progress, progress, processes)
    finally:
        stop_processes(processes)


@dataclass
class _Session:
    """One process's training state: what it trains, with what, and where the run stands."""

    config: TrainingConfig
    run_dir: Path
    processes: Processes
    task: TrainingTask
    network: nn.Module
    optimiser: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    metrics: MetricsLog
    total: int  # iterations of the whole run
    start: int = 0  # the first iteration of this session: 0, or the checkpoint's on resume
    seconds_before: float = 0.0  # training time of the sessions before this one
    best: dict | None = None  # iteration and score of the best validation so far


def _train(config: TrainingConfig, run_dir: Path, resume: bool, show_progress: bool,
           progress: ProgressCallback, processes: Processes) -> TrainingResult | None:
    """Open the run, set up (or resume) this process's session, train; the first process exports the model."""
    split, lock, created = _open_run(config, run_dir, resume, processes)
    try:
        try:
            session = _start_session(config, run_dir, split, resume, processes)
        except InputError:
            _unprepare(created)  # refused data (a label value, a layout): the folder is as it was
            raise
        _run_iterations(session, show_progress, progress)
        barrier(processes)
        if not processes.is_main:
            return None
        return _export(session, split)
    finally:
        if lock is not None:
            lock.close()


def _open_run(config: TrainingConfig, run_dir: Path, resume: bool,
              processes: Processes) -> tuple[DataSplit, IO[bytes] | None, list[Path]]:
    """Read the data split; the first process locks and prepares the run folder, and its verdict reaches every
    process. Returns the split and, on the first process, the run folder's lock and what preparing it created
    (for :func:`_unprepare`).

    Every process waits for that verdict (which also waits for the folder to be
    written), so an error on the first process stops all of them at once
    instead of leaving them waiting.
    """
    if resume:
        require_checkpoint(run_dir / "checkpoints")  # before reading the data again
    split = read_dataset(config.task, config.data, config.seed)
    problem, lock, created = None, None, []
    if processes.is_main:
        created = [path for path in (run_dir, run_dir / RUN_LOCK, run_dir / "config.json", run_dir / "split.json")
                   if not path.exists()]
        try:
            lock = _prepare_run_dir(config, run_dir, split, resume)
        except InputError as error:
            problem = str(error)
        except OSError as error:
            problem = f"cannot prepare the run folder {run_dir}: {error}"
        if problem is not None:
            _unprepare(created)
    problem = gather(processes, problem)[0]
    if problem is not None:
        raise InputError(problem)
    return split, lock, created


def _unprepare(created: list[Path]) -> None:
    """Remove what preparing a run folder created (files, then the folder if it was new and is empty), so a
    refused start leaves ``--out`` as it found it."""
    for path in reversed(created):
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()


def _start_session(config: TrainingConfig, run_dir: Path, split: DataSplit, resume: bool,
                   processes: Processes) -> _Session:
    """The task's adapter, a seeded network (initial weights, or the checkpoint's on resume), optimiser and scaler."""
    task = build_task(config, split, processes.rank)
    torch.manual_seed(config.seed)
    network = task.build_network()
    initial = None if resume else _load_initial_weights(config, network)  # a resumed run has its checkpoint
    network = network.to(processes.device)
    if initial is not None and processes.is_main:
        log.info("starting from the weights of %s", initial.weights_path)
    use_amp = config.amp and processes.device.type == "cuda"
    session = _Session(
        config, run_dir, processes, task, network, build_optimiser(config, network.parameters()),
        torch.amp.GradScaler(processes.device.type, enabled=use_amp), use_amp,
        MetricsLog(run_dir / "metrics.csv", list(task.loss_terms), list(task.validation_metrics)),
        config.total_iterations(len(split.train), processes.world_size))
    if resume:
        _restore_checkpoint(session)
    return session


def _restore_checkpoint(session: _Session) -> None:
    """Continue from the latest checkpoint: weights, optimiser, scaler, this process's random states, the
    iteration, the time spent and the best score; the metrics log drops rows written after it."""
    processes = session.processes
    state = read_latest_checkpoint(session.run_dir / "checkpoints")
    session.network.load_state_dict(state.weights)
    session.optimiser.load_state_dict(state.optimiser)
    session.scaler.load_state_dict(state.scaler)
    if len(state.numpy_rng) != processes.world_size:
        raise InputError(f"the run was checkpointed with {len(state.numpy_rng)} process(es); "
                         f"resume it with the same number, not {processes.world_size}")
    session.task.rng.bit_generator.state = state.numpy_rng[processes.rank]
    torch.set_rng_state(state.torch_rng[processes.rank])
    if processes.device.type == "cuda" and state.cuda_rng[processes.rank]:
        torch.cuda.set_rng_state(state.cuda_rng[processes.rank][0], processes.device)
    session.start, session.seconds_before, session.best = state.iteration, state.seconds, state.best
    if processes.is_main:
        session.metrics.resume(session.start)
        log.info("resuming %s at iteration %d of %d", session.run_dir, session.start, session.total)


def _run_iterations(session: _Session, show_progress: bool, progress: ProgressCallback) -> None:
    """Train from the session's start to the end; at each log interval write the row and whatever is due."""
    config, processes, total = session.config, session.processes, session.total
    model = _distribute(session.network, processes)
    bar = tqdm(total=total, initial=session.start, desc=f"training {config.task.value}", unit="it",
               disable=not (processes.is_main and show_progress), dynamic_ncols=True)
    session_start = plotted = time.time()
    sums: dict[str, float] = {}
    count = 0
    session.network.train()
    for iteration in range(session.start, total):
        rate, losses = _step(session, model, iteration)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value
        count += 1
        done = iteration + 1
        seconds = session.seconds_before + time.time() - session_start
        if done % config.log_interval and done != total:
            continue
        row = {"iteration": done, "seconds": seconds, "learning_rate": rate,
               **{name: value / count for name, value in sums.items()}}
        sums, count = {}, 0
        if processes.is_main:
            row.update(_validate_if_due(session, done))
            _report(session, row, bar, progress)
            if _is_snapshot(config, done, total):
                save_weights(session.run_dir / "snapshots" / f"iter-{done:07d}.safetensors", session.network.state_dict())
        if done % config.checkpoint_interval == 0 or done == total:
            _checkpoint(session, done, seconds)
            if processes.is_main and (done == total or time.time() - plotted > PLOT_INTERVAL_S):
                session.metrics.plot(session.run_dir / "metrics.png", f"{config.name}: {config.task.value}")
                plotted = time.time()
        bar.update(done - bar.n)
    bar.close()


def _distribute(network: nn.Module, processes: Processes) -> nn.Module:
    """The network, wrapped in DistributedDataParallel (gradients averaged) when several processes train."""
    if processes.world_size == 1:
        return network
    device = processes.device
    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)


def _step(session: _Session, model: nn.Module, iteration: int) -> tuple[float, dict[str, float]]:
    """One optimiser step on a fresh batch at the scheduled learning rate (float16 autocast with gradient
    scaling when mixed precision is on); returns the rate and the loss terms, ``loss`` first."""
    rate = learning_rate_at(session.config, iteration, session.total)
    for group in session.optimiser.param_groups:
        group["lr"] = rate
    device = session.processes.device
    batch = session.task.next_batch(device)
    with torch.autocast(device.type, dtype=torch.float16, enabled=session.use_amp):
        loss, terms = session.task.loss(model, batch)
    check_finite_loss(loss, iteration + 1)
    session.optimiser.zero_grad(set_to_none=True)
    session.scaler.scale(loss).backward()
    session.scaler.step(session.optimiser)
    session.scaler.update()
    return rate, {name: float(value.detach()) for name, value in {"loss": loss, **terms}.items()}


def _validate_if_due(session: _Session, done: int) -> dict[str, float]:
    """Validate at the validation interval and at the end, keeping the best weights in ``best.safetensors``;
    returns the row's validation columns (none when no validation is due)."""
    task, network = session.task, session.network
    if not (task.has_validation and (done % session.config.validation.interval == 0 or done == session.total)):
        return {}
    scores = task.validate(network, session.processes.device)
    network.train()
    if session.best is None or scores["score"] > session.best["score"]:
        session.best = {"iteration": done, "score": scores["score"]}
        save_weights(session.run_dir / "best.safetensors", network.state_dict(), {"iteration": done, "scores": scores})
    return {f"validation_{name}": value for name, value in scores.items()}


def _report(session: _Session, row: dict[str, float], bar: tqdm, progress: ProgressCallback) -> None:
    """Append ``row`` to ``metrics.csv``, show its loss and score on the bar, and call ``progress``."""
    session.metrics.append(row)
    bar.set_postfix(loss=f"{row['loss']:.4f}", **({"score": f"{row['validation_score']:.3f}"}
                                                  if "validation_score" in row else {}))
    done, total = int(row["iteration"]), session.total
    progress(done / total, f"iteration {done}/{total}, loss {row['loss']:.4f}")


def _is_snapshot(config: TrainingConfig, done: int, total: int) -> bool:
    """Snapshots for averaging: the last ``snapshots`` iterations that are ``interval`` apart, ending at ``total``."""
    averaging = config.averaging
    remaining = total - done
    return averaging.snapshots > 0 and remaining % averaging.interval == 0 and remaining < averaging.snapshots * averaging.interval


def _checkpoint(session: _Session, done: int, seconds: float) -> None:
    """Gather every process's random state; the first process writes the checkpoint."""
    processes = session.processes
    cuda_rng = [torch.cuda.get_rng_state(processes.device)] if processes.device.type == "cuda" else []
    states = gather(processes, (session.task.rng.bit_generator.state, torch.get_rng_state(), cuda_rng))
    if processes.is_main:
        write_checkpoint(session.run_dir / "checkpoints", Checkpoint(
            iteration=done, weights=session.network.state_dict(), optimiser=session.optimiser.state_dict(),
            scaler=session.scaler.state_dict(), numpy_rng=[s[0] for s in states], torch_rng=[s[1] for s in states],
            cuda_rng=[s[2] for s in states], seconds=seconds, best=session.best))
    barrier(processes)


def _describe_initial(config: TrainingConfig) -> dict:
    """Name, file and sha256 of the model a fine-tuning run started from (for the manifest)."""
    entry = find_model(config.model.initial_weights, config.task.value)
    return {"model": entry.name, "file": entry.weights_path.name, "sha256": entry.manifest.get("sha256")}


def _export_weights(session: _Session) -> tuple[dict[str, torch.Tensor], str, dict[str, float] | None]:
    """The averaged snapshots (validated again), else the best validated weights, else the last ones;
    with where they came from and their validation scores."""
    run_dir, task, network = session.run_dir, session.task, session.network
    snapshots = sorted((run_dir / "snapshots").glob("iter-*.safetensors"))
    if session.config.averaging.snapshots and snapshots:
        weights = average_weights([load_weights(path)[0] for path in snapshots])
        source = f"average of {len(snapshots)} snapshots ({', '.join(p.stem for p in snapshots)})"
        scores = None
        if task.has_validation:
            network.load_state_dict(weights)
            scores = task.validate(network, session.processes.device)
        return weights, source, scores
    if (run_dir / "best.safetensors").exists():
        weights, metadata = load_weights(run_dir / "best.safetensors")
        return weights, f"best validation score, iteration {metadata['iteration']}", metadata["scores"]
    return network.state_dict(), f"last iteration ({session.total}); no validation data", None


def _export(session: _Session, split: DataSplit) -> TrainingResult:
    """Save the exported weights with a manifest (task, data, run, scores) as the model ``config.name``."""
    config, run_dir, task, total = session.config, session.run_dir, session.task, session.total
    weights, source, scores = _export_weights(session)
    checkpoint = read_latest_checkpoint(run_dir / "checkpoints")
    manifest = {
        **task.manifest(),
        "version": "1",
        "training": {
            "data": task.describe_data(),
            "layout": split.layout.value,
            "cases": {"train": len(split.train), "validation": len(split.validation)},
            "iterations": total,
            "batch_size": config.batch_size,
            "optimiser": f"{config.optimiser.name.value} lr {config.optimiser.learning_rate}, "
                         f"{config.schedule.kind.value} schedule",
            "hardware": _hardware(session.processes),
            "seconds": round(checkpoint.seconds, 1),
            "exported": source,
            **({"initial_weights": _describe_initial(config)} if config.model.initial_weights else {}),
            "run_config": str((run_dir / "config.json").resolve()),
            "config": config_to_dict(config),
        },
        "scores": {"validation": scores},
    }
    entry = save_model(weights, manifest, run_dir / "model", config.name)
    log.info("exported %s (%s)", entry.weights_path, source)
    return TrainingResult(run_dir, entry, total, scores)
