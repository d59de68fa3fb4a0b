"""The ``spineseg train`` command line, and ``python -m spineseg.training`` (what torchrun starts).

The ``spineseg`` command adds :func:`add_arguments` to its ``train``
subcommand; :func:`main` runs the same arguments on their own, so the
training processes need nothing else of the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path

from ..choices import DeviceChoice, Task
from ..errors import EXIT_OK, CancelledError, InputError, SpineSegError, error_line, exit_code

__all__ = ["add_arguments", "run_training", "main"]

# The exit codes of the ``spineseg`` command.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``spineseg train``; settings not listed here go through ``--set KEY=VALUE``."""
    parser.add_argument("task", choices=[task.value for task in Task], help="which network to train")
    parser.add_argument("--data", help="data folder (VerSe, images/+labels/, or BIDS layout), or 'phantoms'")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, metrics, exported model)")
    parser.add_argument("--config", type=Path, help="configuration file (.json or .toml); task defaults otherwise")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set optimiser.learning_rate=3e-4 (repeatable)")
    parser.add_argument("--from", dest="start_from", metavar="MODEL",
                        help="fine-tune MODEL (a bundled name, e.g. vertebrae-ct-synth-v7, or a manifest path): start "
                             "from its weights with the recipe it was trained with (see `spineseg models`)")
    parser.add_argument("--labels", metavar="MAPPING",
                        help="numbering of the data's vertebra label maps when not VerSe's: 'totalsegmentator' "
                             "(TotalSegmentator v2 ids), FROM:TO pairs such as 31:20,32:19, or a from,to .csv file; "
                             "other values become background")
    parser.add_argument("--real", dest="real_cases", action="append", default=[], metavar="CASES",
                        help="real labelled CTs mixed into a phantom run (--data phantoms): a data folder (VerSe or "
                             "images/labels layout) or IMAGE,LABELS; repeatable; --labels renumbers their labels")
    parser.add_argument("--real-share", type=float, metavar="F",
                        help="share of training patches drawn from the --real CTs (e.g. 0.25); the rest are phantoms")
    parser.add_argument("--iterations", type=int, metavar="N",
                        help="training steps of the run; with --resume, a larger N extends a finished run")
    parser.add_argument("--name", help="name of the exported model (default: the name of the --out folder)")
    parser.add_argument("--device", choices=[device.value for device in DeviceChoice], help="default: the configuration's (auto)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint (with --iterations: extend it)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only prepare the data set's cases into the cache (see spineseg.training.cache)")


def run_training(args: argparse.Namespace) -> dict[str, str]:
    """Resolve the configuration, train, and return the paths of what was written."""
    from .config import config_from_dict, default_config, load_config, recipe_of
    from .trainer import train

    if args.resume:
        if (args.config or args.overrides or args.data or args.name or args.device or args.start_from or args.labels
                or args.real_cases or args.real_share is not None):
            raise InputError(f"--resume continues the configuration stored in {args.out / 'config.json'}; "
                             "leave out --config, --set, --data, --from, --labels, --real, --real-share, --name "
                             "and --device "
                             "(--iterations N extends the run)")
        stored = args.out / "config.json"
        if not stored.is_file():
            raise InputError(f"{args.out} holds no run to resume (no config.json); start it without --resume")
        config = config_from_dict(json.loads(stored.read_text()))
        if config.task.value != args.task:
            raise InputError(f"{args.out} holds a {config.task.value} run, not {args.task}")
        if args.iterations is not None:
            config = _extended(config, args.iterations, args.out)
    else:
        flags = []
        if args.data:
            path = args.data if args.data == "phantoms" else str(Path(args.data).resolve())
            flags.append(f"data.path={json.dumps(path)}")
        if args.labels:
            flags.append(f"data.label_mapping={json.dumps(args.labels)}")
        if args.real_cases:
            flags.append(f"data.real_cases={json.dumps(args.real_cases)}")
        if args.real_share is not None:
            flags.append(f"data.real_share={json.dumps(args.real_share)}")
        if args.iterations is not None:
            flags += ["iterations=" + str(args.iterations), "epochs=null"]
        if args.name:
            flags.append(f"name={json.dumps(args.name)}")
        if args.device:
            flags.append(f"device={json.dumps(args.device)}")
        recipe = recipe_of(args.start_from, args.task) if args.start_from else None
        config = load_config(args.task, args.config, [*flags, *args.overrides], recipe=recipe)
        if config.name == default_config(args.task).name:  # no name given: the export is named after the run
            config = dataclasses.replace(config, name=args.out.resolve().name)
    if args.prepare_only:
        from .tasks.vertebrae import prepare_cases

        return {"cache": str(prepare_cases(config))}
    try:
        result = train(config, args.out, resume=args.resume)
    except (KeyboardInterrupt, CancelledError):
        print(f"spineseg: training stopped; the last checkpoint in {args.out / 'checkpoints'} is kept. "
              f"Continue with: spineseg train {args.task} --out {args.out} --resume", file=sys.stderr)
        stopped = CancelledError("training stopped")
        stopped.reported = True  # the line above said what was kept; the CLI adds nothing
        raise stopped from None
    if result is None:  # not the first of several processes
        return {}
    return {"model": str(result.model.weights_path), "manifest": str(result.model.manifest_path),
            "metrics": str(args.out / "metrics.csv"), "curves": str(args.out / "metrics.png")}


def _extended(config, iterations: int, run_dir: Path):
    """The stored configuration of a run with more iterations, written back to its ``config.json`` so that a
    later --resume continues the longer run.

    Raises:
        InputError: ``iterations`` is not beyond the run's latest checkpoint.
    """
    from .checkpoint import read_latest_checkpoint
    from .config import save_config

    done = read_latest_checkpoint(run_dir / "checkpoints").iteration
    if iterations <= done:
        raise InputError(f"--iterations {iterations} does not extend the run in {run_dir}: it has done {done}; "
                         f"give more than {done}")
    config = dataclasses.replace(config, iterations=iterations, epochs=None)
    save_config(config, run_dir / "config.json")
    return config


def main(argv: list[str] | None = None) -> int:
    """``python -m spineseg.training TASK ...``: train as ``spineseg train TASK ...`` does; returns the exit code.

    Errors meant for the user end in one line on stderr and exit code 2 (bad
    input) or 3 (model problem); a stop (Ctrl-C, or SIGTERM from torchrun)
    keeps the last checkpoint and exits with 130.
    """
    parser = argparse.ArgumentParser(prog="python -m spineseg.training",
                                     description="Train the vertebra or disc network (as 'spineseg train').")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _raise_cancelled)
    try:
        outputs = run_training(args)
    except (CancelledError, KeyboardInterrupt) as error:
        return exit_code(error)
    except SpineSegError as error:
        print(error_line("spineseg", error), file=sys.stderr)
        return exit_code(error)
    for path in outputs.values():
        print(path)
    return EXIT_OK


def _raise_cancelled(signum: int, frame: object) -> None:
    """SIGTERM stops training between two steps, as Ctrl-C does."""
    raise CancelledError("terminated by signal")
