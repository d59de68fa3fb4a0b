"""The ``spineseg`` command: segment vertebrae, label discs, make phantoms, run the demo.

Each subcommand is a small function; errors meant for the user end in one
line on stderr and a non-zero exit code (2 bad input, 3 model problem,
130 interrupted), and no output files are left behind.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from . import __version__, tasks
from .choices import DeviceChoice
from .errors import EXIT_OK, CancelledError, InputError, SpineSegError, error_line, exit_code
from .exits import NOTHING_WRITTEN
from .io import read_volume
from .progress import ProgressCallback, TextProgress, done_line, progress_line
from .training.command import add_arguments as add_training_arguments
from .volume import VolumeKind

__all__ = ["main", "build_parser"]

logger = logging.getLogger("spineseg")



class _ProgressReporter:
    """A progress callback printing for a person (:class:`TextProgress` on stderr) or the JSON-lines protocol
    (for Slicer)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.text = TextProgress(sys.stderr) if fmt == "text" else None

    def __call__(self, fraction: float, message: str) -> None:
        if self.text is not None:
            self.text(fraction, message)
        else:
            print(progress_line(fraction, message), flush=True)

    def line(self, text: str) -> None:
        """A line of its own on stderr (a warning, the summary), never glued to the progress display."""
        if self.text is not None:
            self.text.line(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.text is not None:
            self.text.close()

    def finish(self, outputs: dict[str, str]) -> None:
        self.close()
        if self.fmt == "json":
            print(done_line(outputs), flush=True)


class _LineHandler(logging.Handler):
    """Log records (warnings of the input checks and the pipelines) as lines of their own through the reporter."""

    def __init__(self, reporter: _ProgressReporter) -> None:
        super().__init__()
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        self.reporter.line(f"{record.levelname.lower()}: {record.getMessage()}")


def _run_task(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    from .jobs import run_job

    spec = tasks.get(args.command)
    reference = read_volume(args.reference, VolumeKind.LABEL) if getattr(args, "reference", None) else None
    job = run_job(spec, args.input, args.output, model=args.model, device=args.device,
                  overwrite=args.overwrite, picture=not args.no_picture, input_name=args.input_name,
                  reference=reference, progress=progress, force_modality=args.force_modality, series=args.series)
    if reference is not None:
        spec.load("reference_scorer")(job.image, job.result, reference)
    return {name: str(path) for name, path in job.outputs.items()}


def _run_phantom(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    from .demo import write_ct_phantom

    files = write_ct_phantom(args.output, tuple(args.spacing), args.orientation, args.seed, args.overwrite)
    return {name: str(path) for name, path in files.items()}


def _run_demo(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    from .demo import run_demo

    outputs = run_demo(args.output, args.seed, args.device, args.overwrite, progress)
    return {name: str(path) for name, path in outputs.items()}


def _run_models(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    """Print every model SpineSeg can load (bundled, then those under the given folders) with its summary."""
    from .model_store import BUNDLED_MODELS_DIR, list_models, model_summary, read_card

    for folder in args.folders:
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; give folders that hold models (e.g. a training run's --out)")
    for entry in list_models(None, args.folders):
        bundled = entry.manifest_path.parent == BUNDLED_MODELS_DIR
        default = " (default)" if bundled and tasks.get(entry.task).default_model == entry.name else ""
        reference = entry.name if bundled else str(entry.manifest_path)
        print(f"{entry.task:9} {reference}{default}: {model_summary(entry)}")
        card = read_card(entry)
        if card is not None:
            print(f"{'':9}   caveat: {card.caveat}")
    return {}


def _run_train(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    from .training.command import run_training

    return run_training(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spineseg", description="Segment and name vertebrae in CT, find and name intervertebral discs in MRI."
    )
    parser.add_argument("--version", action="version", version=f"spineseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True)

    devices = [choice.value for choice in DeviceChoice]

    for spec in tasks.specs():  # one subcommand per task
        sub = commands.add_parser(spec.name, help=spec.help, description=spec.help)
        sub.add_argument("input", type=Path, help="image file (NIfTI, NRRD, MHA) or DICOM folder")
        sub.add_argument("-o", "--output", type=Path, required=True, help="output folder")
        sub.add_argument("--model", default=None,
                         help="bundled model name, or path of a model's .json manifest or .safetensors weights "
                              "(default: the bundled model)")
        sub.add_argument("--device", default=DeviceChoice.AUTO.value, choices=devices)
        sub.add_argument("--overwrite", action="store_true", help="replace existing outputs in the folder")
        sub.add_argument("--no-picture", action="store_true", help="do not draw the PNG (needs no matplotlib)")
        sub.add_argument("--input-name", default=None, help="what the JSON output records as the input "
                                                            "(default: the INPUT path)")
        sub.add_argument("--force-modality", action="store_true",
                         help=f"run even if the image does not look like {spec.image}")
        sub.add_argument("--series", default=None, metavar="UID",
                         help="for a DICOM folder holding several series: the one to read (the error lists them)")
        sub.add_argument("--progress-format", default="text", choices=["text", "json"],
                         help="'json' prints one JSON object per line (used by the Slicer module)")
        if spec.reference_scorer is not None:
            sub.add_argument("--reference", type=Path, help="reference label map (the task's label numbers) to score against")
        sub.set_defaults(runner=_run_task)

    phantom = commands.add_parser("phantom", help="write a CT spine phantom and its reference labels")
    phantom.add_argument("-o", "--output", type=Path, required=True)
    phantom.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], metavar=("I", "J", "K"))
    phantom.add_argument("--orientation", default="LPS", help="3-letter axis code, e.g. LPS, RAS, PIR")
    phantom.add_argument("--seed", type=int, default=1000)
    phantom.add_argument("--overwrite", action="store_true")
    phantom.set_defaults(runner=_run_phantom, progress_format="text")

    demo = commands.add_parser("demo", help="run both tasks on phantoms with the bundled models and print scores")
    demo.add_argument("--output", type=Path, default=Path("demo-output"))
    demo.add_argument("--seed", type=int, default=1000, help="phantom seed (training used seeds below 1000)")
    demo.add_argument("--device", default=DeviceChoice.AUTO.value, choices=devices)
    demo.add_argument("--overwrite", action="store_true")
    demo.set_defaults(runner=_run_demo, progress_format="text")

    models = commands.add_parser("models", help="list the models SpineSeg can load, each with its card's summary",
                                 description="List the bundled models and those in FOLDERs (e.g. a training run), "
                                             "with what each card says; pass a name or the listed path to --model.")
    models.add_argument("folders", type=Path, nargs="*", metavar="FOLDER", help="folders to search for models")
    models.set_defaults(runner=_run_models, progress_format="text")

    train = commands.add_parser("train", help="train or fine-tune the vertebra or disc network on a data set (docs/fine-tuning.md)",
                                description="Train the vertebra or disc network; resumable, validated, exported "
                                            "as a model SpineSeg loads.")
    add_training_arguments(train)
    train.set_defaults(runner=_run_train, progress_format="text")
    return parser


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise CancelledError("terminated by signal")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spineseg`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    reporter = _ProgressReporter(args.progress_format)
    handler = _LineHandler(reporter)  # spineseg's log lines, warnings among them, on lines of their own
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return _run(args, reporter)
    finally:
        logger.removeHandler(handler)


def _run(args: argparse.Namespace, reporter: _ProgressReporter) -> int:
    """Run the chosen subcommand; map its errors to one line on stderr and an exit code."""
    try:
        # From here on a stop unwinds (so that the command cleans up) instead of the console script's
        # immediate exit during start-up (spineseg.entry).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
        try:
            outputs = args.runner(args, reporter)
        finally:
            reporter.close()
    except (CancelledError, KeyboardInterrupt) as error:
        written = getattr(error, "written", ())
        if getattr(error, "reported", False):
            pass  # the command already said what it kept
        elif written:
            print(f"spineseg: interrupted after the outputs were complete: {', '.join(map(str, written))}",
                  file=sys.stderr)
        else:
            print(NOTHING_WRITTEN, file=sys.stderr)
        return exit_code(error)
    except SpineSegError as error:
        print(error_line("spineseg", error), file=sys.stderr)
        return exit_code(error)
    except MemoryError as error:
        print("spineseg: error: out of memory; try a smaller image or --device cpu", file=sys.stderr)
        return exit_code(error)
    reporter.finish(outputs)
    if args.progress_format == "text":
        if args.command in tasks.names():
            from .summary import RunSummary

            for line in RunSummary.from_folder(args.command, args.output).lines():
                reporter.line(line)
        for path in outputs.values():
            print(path)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
