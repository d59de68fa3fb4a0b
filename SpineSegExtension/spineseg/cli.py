"""The ``spineseg`` command: segment vertebrae, label discs, make phantoms, run the demo.

Each subcommand is a small function; errors meant for the user end in one
line on stderr and a non-zero exit code (2 bad input, 3 model problem,
130 interrupted), and no output files are left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from . import __version__
from .errors import CancelledError, InputError, ModelError, SpineSegError
from .io import output_directory, read_volume, write_volume
from .progress import ProgressCallback
from .training.command import add_arguments as add_training_arguments
from .volume import VolumeKind

__all__ = ["main", "build_parser"]

logger = logging.getLogger("spineseg")

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _ProgressReporter:
    """A progress callback printing a tqdm bar (text) or one JSON object per line (for Slicer)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.bar: tqdm | None = None  # created at the first report, so early errors print alone

    def __call__(self, fraction: float, message: str) -> None:
        if self.fmt == "text":
            if self.bar is None:
                self.bar = tqdm(total=1000, unit="‰", file=sys.stderr, leave=False)
            self.bar.n = int(1000 * min(max(fraction, 0.0), 1.0))
            self.bar.set_description(message[:40])
            self.bar.refresh()
        else:
            print(json.dumps({"progress": round(fraction, 4), "message": message}), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self, outputs: dict[str, str]) -> None:
        self.close()
        if self.fmt == "json":
            print(json.dumps({"done": True, "outputs": outputs}), flush=True)


def _print_scores(scores) -> None:
    print(f"{'vertebra':>9} {'Dice':>6} {'ASSD mm':>8} {'named':>6}")
    from .labels import vertebra_name

    for score in scores.vertebrae:
        print(
            f"{vertebra_name(score.level):>9} {score.dice:6.3f} {score.assd_mm:8.2f} "
            f"{'yes' if score.identified else 'NO':>6}"
        )
    summary = scores.summary()
    print(
        f"mean Dice {summary['mean_dice']:.3f}, mean ASSD {summary['mean_assd_mm']:.2f} mm, "
        f"identification {100 * summary['identification_rate']:.0f} %, missed {summary['missed']}, "
        f"false positives {summary['false_positives']}"
    )


def _run_vertebrae(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    from .metrics import score_vertebrae
    from .vertebrae.model import VertebraModel
    from .vertebrae.outputs import OUTPUT_NAMES, write_vertebrae_outputs
    from .vertebrae.pipeline import segment_vertebrae

    image = read_volume(args.input)
    reference = read_volume(args.reference, VolumeKind.LABEL) if args.reference else None
    if reference is not None and not reference.same_grid(image):
        raise InputError(f"reference {args.reference} is not on the input's grid (shape or geometry differ)")
    model = VertebraModel.from_checkpoint(args.model, args.device)
    with output_directory(args.output, OUTPUT_NAMES, args.overwrite) as staging:
        result = segment_vertebrae(image, model, progress=progress)
        write_vertebrae_outputs(image, result, staging, source=str(args.input), model=model.name)
    if reference is not None:
        _print_scores(score_vertebrae(result.label_map.array, reference.array, image.spacing))
    return {name: str(Path(args.output) / name) for name in OUTPUT_NAMES}


def _run_discs(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    from .discs.outputs import run_discs

    run_discs(args.input, args.output, model=args.model, device=args.device, overwrite=args.overwrite,
              progress=progress)
    return {name: str(Path(args.output) / name) for name in ("discs.mrk.json", "discs.json", "discs.png")}


def _run_phantom(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    from .phantoms.ct import make_ct_phantom

    spacing = tuple(args.spacing)
    phantom = make_ct_phantom(spacing=spacing, orientation=args.orientation, seed=args.seed)
    out = Path(args.output)
    names = ["ct.nii.gz", "vertebrae-reference.nii.gz"]
    with output_directory(out, names, args.overwrite) as staging:
        write_volume(phantom.image, staging / names[0])
        write_volume(phantom.labels, staging / names[1])
    return {name: str(out / name) for name in names}


def _run_demo(args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    """Phantom CT -> vertebrae (with Dice against the truth); phantom MRI -> discs (with distances)."""
    out = Path(args.output)
    started = time.time()
    phantom_args = argparse.Namespace(spacing=[1.0, 1.0, 1.0], orientation="LPS", seed=args.seed,
                                      output=out / "phantom", overwrite=args.overwrite)
    print(f"1/2 vertebrae: generating a CT phantom (seed {args.seed}, held out from training) in {out / 'phantom'}")
    files = _run_phantom(phantom_args, progress)
    vertebra_args = argparse.Namespace(input=files["ct.nii.gz"], reference=files["vertebrae-reference.nii.gz"],
                                       output=out / "vertebrae", overwrite=args.overwrite, model=None,
                                       device=args.device)
    outputs = _run_vertebrae(vertebra_args, progress)
    print(f"vertebra outputs in {out / 'vertebrae'} ({time.time() - started:.0f} s)")
    print("2/2 discs: generating a T2 MRI phantom and labelling its discs")
    outputs.update(_run_disc_demo(out, args, progress))
    return outputs


def _run_disc_demo(out: Path, args: argparse.Namespace, progress: ProgressCallback) -> dict[str, str]:
    """Phantom MRI -> discs, then the distance of each found disc to the phantom's true disc centre."""
    from .discs.metrics import score_discs
    from .labels import disc_name
    from .phantoms.mri import make_mri_phantom

    phantom = make_mri_phantom(contrast="T2", seed=args.seed)
    image_path = out / "phantom" / "mri_t2.nii.gz"
    if image_path.exists() and not args.overwrite:
        raise InputError(f"{image_path} exists; pass --overwrite")
    write_volume(phantom.image, image_path)
    disc_args = argparse.Namespace(input=image_path, output=out / "discs", model=None, device=args.device,
                                   overwrite=args.overwrite)
    outputs = _run_discs(disc_args, progress)
    found = json.loads(Path(outputs["discs.json"]).read_text())["discs"]
    print(f"{'disc':>7} {'distance mm':>12}")
    for record in found:
        truth = phantom.disc_points.get(record["number"])
        distance = "no such disc" if truth is None else f"{np.linalg.norm(np.array(record['position_ras']) - truth):.2f}"
        print(f"{record['label']:>7} {distance:>12}")
    scores = score_discs({r["number"]: np.array(r["position_ras"]) for r in found}, phantom.disc_points)
    missed = [disc_name(n) for n in phantom.disc_points if n not in {r["number"] for r in found}]
    median = float(np.median(scores.distances_mm)) if scores.distances_mm else float("nan")
    print(
        f"median distance {median:.2f} mm, false negatives {scores.false_negatives}/{scores.n_reference}, "
        f"false positives {scores.false_positives}, right labels {100 * scores.label_accuracy:.0f} %"
        + (f"; missed {', '.join(missed)}" if missed else "")
    )
    return outputs


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

    def task_parser(name: str, help_text: str, runner: Callable) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("input", type=Path, help="image file (NIfTI, NRRD, MHA) or DICOM folder")
        sub.add_argument("-o", "--output", type=Path, required=True, help="output folder")
        sub.add_argument("--model", default=None, help="bundled model name or path of a model .json (default: bundled)")
        sub.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        sub.add_argument("--overwrite", action="store_true", help="replace existing outputs in the folder")
        sub.add_argument("--progress-format", default="text", choices=["text", "json"],
                         help="'json' prints one JSON object per line (used by the Slicer module)")
        sub.set_defaults(runner=runner)
        return sub

    vertebrae = task_parser("vertebrae", "segment and name every vertebra in a CT", _run_vertebrae)
    vertebrae.add_argument("--reference", type=Path, help="reference label map (VerSe numbers) to score against")
    task_parser("discs", "find and name every intervertebral disc in an MRI", _run_discs)

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
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--overwrite", action="store_true")
    demo.set_defaults(runner=_run_demo, progress_format="text")

    train = commands.add_parser("train", help="train the vertebra or disc network on a data set (README: Training)",
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
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    reporter = _ProgressReporter(args.progress_format)
    try:
        try:
            outputs = args.runner(args, reporter)
        finally:
            reporter.close()
    except (CancelledError, KeyboardInterrupt):
        print("spineseg: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModelError as error:
        print(f"spineseg: model error: {error}", file=sys.stderr)
        return EXIT_MODEL
    except (InputError, SpineSegError) as error:
        print(f"spineseg: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except MemoryError:
        print("spineseg: error: out of memory; try a smaller image or --device cpu", file=sys.stderr)
        return EXIT_FAILURE
    reporter.finish(outputs)
    if args.progress_format == "text":
        for path in outputs.values():
            print(path)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
