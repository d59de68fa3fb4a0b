"""The ``spineseg train`` command line, and ``python -m spineseg.training`` (what torchrun starts).

The ``spineseg`` command adds :func:`add_arguments` to its ``train``
subcommand; :func:`main` runs the same arguments on their own, so the
training processes need nothing else of the CLI.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from ..choices import DeviceChoice, Task
from ..errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK, CancelledError, InputError, ModelError, SpineSegError

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
    parser.add_argument("--name", help="name of the exported model")
    parser.add_argument("--device", choices=[device.value for device in DeviceChoice], help="default: the configuration's (auto)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only prepare the data set's cases into the cache (see spineseg.training.cache)")


def run_training(args: argparse.Namespace) -> dict[str, str]:
    """Resolve the configuration, train, and return the paths of what was written."""
    from .config import config_from_dict, load_config
    from .trainer import train

    if args.resume:
        if args.config or args.overrides or args.data or args.name or args.device:
            raise InputError(f"--resume continues the configuration stored in {args.out / 'config.json'}; "
                             "leave out --config, --set, --data, --name and --device")
        stored = args.out / "config.json"
        if not stored.is_file():
            raise InputError(f"{args.out} holds no run to resume (no config.json); start it without --resume")
        config = config_from_dict(json.loads(stored.read_text()))
        if config.task.value != args.task:
            raise InputError(f"{args.out} holds a {config.task.value} run, not {args.task}")
    else:
        flags = []
        if args.data:
            path = args.data if args.data == "phantoms" else str(Path(args.data).resolve())
            flags.append(f"data.path={json.dumps(path)}")
        if args.name:
            flags.append(f"name={json.dumps(args.name)}")
        if args.device:
            flags.append(f"device={json.dumps(args.device)}")
        config = load_config(args.task, args.config, [*flags, *args.overrides])
    if args.prepare_only:
        from .cache import prepare_cases

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
    except (CancelledError, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    except ModelError as error:
        print(f"spineseg: model error: {error}", file=sys.stderr)
        return EXIT_MODEL
    except SpineSegError as error:
        print(f"spineseg: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    for path in outputs.values():
        print(path)
    return EXIT_OK


def _raise_cancelled(signum: int, frame: object) -> None:
    """SIGTERM stops training between two steps, as Ctrl-C does."""
    raise CancelledError("terminated by signal")
