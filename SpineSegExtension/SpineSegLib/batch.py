"""Run SpineSeg on one image or a folder of images without a window.

In Slicer:
    Slicer --no-main-window --python-script SpineSegExtension/SpineSegLib/batch.py -- \
        --task vertebrae --input scans/ --output results/
With plain Python and the slicer-core wheel (MRML without the application):
    python SpineSegExtension/SpineSegLib/batch.py --task discs --input mri.nii.gz --output results/

It lives in SpineSegLib, not beside SpineSeg.py, because Slicer loads every
Python file at the module's top level as a module. Run as a file, it puts
the folder holding SpineSegLib and spineseg on sys.path itself.

Each case gets a folder ``OUTPUT/<case>/`` holding the files ``spineseg
vertebrae`` or ``spineseg discs`` writes (the same job, :mod:`spineseg.jobs`,
so the same files and JSON schema). The model is loaded once for all cases.
Cases whose outputs all exist are skipped; a failing case is reported and the
batch goes on. Files are staged and moved into place together, the JSON
last, so a case folder without its JSON is not done (and is redone). A case
whose output folder cannot be written fails before it is predicted. Ctrl-C
or SIGTERM prints the summary so far and exits with 130; during the
program's own start-up (its imports) it exits at once with 130 and one line.

A DICOM folder holding several series is read as ``spineseg`` reads it: the
task's modality decides, an ambiguous folder fails with the list of its series,
and ``--series UID`` (repeatable: series UIDs are unique, so each folder reads
the named series it holds) picks one.
"""

from __future__ import annotations

import os
import signal
import sys

if __name__ == "__main__":  # run as a file: SpineSegLib and spineseg sit in the folder above
    _extension_folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _extension_folder not in sys.path:
        sys.path.insert(0, _extension_folder)
    from spineseg.entry import install_startup_handlers  # light: a stop during the imports below exits 130

    install_startup_handlers()

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

log = logging.getLogger("SpineSegLib.batch")

from spineseg import tasks  # noqa: E402  (torch-free)
from spineseg.choices import DeviceChoice  # noqa: E402
from spineseg.errors import EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, CancelledError, exit_code  # noqa: E402
from spineseg.jobs import output_names  # noqa: E402  (imports torch only when a job runs)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

TaskFunction = Callable[..., Any]  # (volume, model=, device=, progress=, force_modality=) -> a result


@dataclass(frozen=True)
class Case:
    """One input: an image file or a DICOM folder, and the name its outputs go under."""

    name: str
    path: Path


@dataclass
class BatchSummary:
    """What happened to each case."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # the failed cases whose input was refused (InputError)
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C (or a CancelledError); the lists say how far it got

    @property
    def exit_code(self) -> int:
        """130 when interrupted, 0 when no case failed, 2 when every failure was a refused input (as ``spineseg``
        exits), else 1."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if not self.failed:
            return EXIT_OK
        return EXIT_INPUT if set(self.failed) <= set(self.refused) else EXIT_FAILURE

    def text(self) -> str:
        stopped = ", then interrupted" if self.interrupted else ""
        lines = [
            f"SpineSeg batch: {len(self.done)} done, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed in {self.seconds:.1f} s{stopped}"
        ]
        lines += [f"  FAILED {name}: {message}" for name, message in self.failed.items()]
        return "\n".join(lines)


def case_name(path: Path) -> str:
    """File name without its image suffix ('ct.nii.gz' -> 'ct'); folder name for DICOM folders."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_cases(input_path: str | os.PathLike) -> list[Case]:
    """One case for an image file or a DICOM folder; for a folder of images, one per image file
    and one per sub-folder (read as a DICOM series), sorted by name.

    Raises:
        ValueError: the input does not exist or holds nothing to process.
    """
    path = Path(input_path)
    if not path.exists():
        raise ValueError(f"--input {path} does not exist")
    if path.is_file():
        return [Case(case_name(path), path)]
    images = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not images and not folders:
        return [Case(path.name, path)]  # a folder of DICOM files is itself one case
    cases = [Case(case_name(p), p) for p in images + folders]
    names = [case.name for case in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several inputs map to the same case name: {', '.join(duplicates)}")
    return cases


def outputs_exist(output_dir: Path, case: Case, task: tasks.TaskSpec | str) -> bool:
    return all((output_dir / case.name / name).exists() for name in output_names(task))


def series_by_case(input_path: str | os.PathLike, cases: Sequence[Case], uids: Sequence[str]) -> dict[str, str]:
    """The series each DICOM case reads: the one of ``uids`` (``--series``) its folder holds.

    Raises:
        spineseg.errors.InputError: a UID that no DICOM case holds (for a single DICOM case, with the message
            ``spineseg --series`` gives, listing the folder's series), or a folder holding two of them.
    """
    from spineseg.errors import InputError
    from spineseg.io import choose_dicom_series, list_dicom_series

    uids = list(dict.fromkeys(uids))
    if not uids:
        return {}
    folders = {case.name: case.path for case in cases if case.path.is_dir()}
    found = {}
    for name, folder in folders.items():
        try:
            found[name] = list_dicom_series(folder)
        except (OSError, RuntimeError):  # unreadable: the case fails on its own when it runs
            found[name] = []
    chosen = {}
    for name, series in found.items():
        held = [uid for uid in uids if any(s.uid == uid for s in series)]
        if len(held) > 1:
            raise InputError(f"{folders[name]} holds {len(held)} of the series given with --series "
                             f"({', '.join(held)}); give one per folder")
        if held:
            chosen[name] = held[0]
    missing = [uid for uid in uids if uid not in chosen.values()]
    if missing and len(found) == 1:
        ((name, series),) = found.items()
        choose_dicom_series(folders[name], series, None, missing[0])  # raises the CLI's message
    if missing:
        raise InputError(f"no DICOM folder in {input_path} holds series {', '.join(missing)} (--series)")
    return chosen


def run_batch(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    task: tasks.TaskSpec | str,
    device: DeviceChoice | str = DeviceChoice.AUTO,
    model: Any = None,
    overwrite: bool = False,
    task_function: TaskFunction | None = None,
    force_modality: bool = False,
    series: Sequence[str] = (),
) -> BatchSummary:
    """Process every case; skip those already done, record failures and go on; stop at Ctrl-C.

    Args:
        model: None (bundled), a bundled name, a manifest or weights path, or a loaded model; loaded once.
        task_function: replaces the core's task function (tests pass a fast one).
        force_modality: run cases that do not look like the task's modality (CT or MRI).
        series: DICOM series UIDs (``--series``); a DICOM case reads the one its folder holds
            (see :func:`series_by_case`), the others choose as ``spineseg`` does.

    Raises:
        ValueError: unknown task or device, an input with nothing to process, or a series no case holds.
        spineseg.errors.ModelError: the model cannot be loaded.
        KeyboardInterrupt: before the first case; once cases run, the summary records it instead.
    """
    from spineseg.model_store import load_model

    task, device = tasks.get(task), DeviceChoice(device)
    start = time.monotonic()
    output_dir = Path(output_dir)
    cases = find_cases(input_path)
    chosen = series_by_case(input_path, cases, series)
    loaded = load_model(task, model, device)
    summary = BatchSummary()
    try:
        for number, case in enumerate(cases, 1):
            _run_case(case, f"[{number}/{len(cases)}]", output_dir, task, device, loaded, overwrite, task_function,
                      force_modality, chosen.get(case.name), summary)
    except (KeyboardInterrupt, CancelledError):
        log.error("interrupted: the cases done are complete, the one running left nothing partial")
        summary.interrupted = True
    summary.seconds = time.monotonic() - start
    return summary


def _run_case(case: Case, count: str, output_dir: Path, task: tasks.TaskSpec, device: DeviceChoice, loaded: Any,
              overwrite: bool, task_function: TaskFunction | None, force_modality: bool, series: str | None,
              summary: BatchSummary) -> None:
    """Run one case and record what happened in ``summary``; only an interruption is raised."""
    from spineseg.errors import InputError
    from spineseg.jobs import run_job

    if not overwrite and outputs_exist(output_dir, case, task):
        log.info("%s %s: outputs exist, skipped", count, case.name)
        summary.skipped.append(case.name)
        return
    log.info("%s %s: %s ...", count, case.name, task.name)
    case_start = time.monotonic()

    def progress(fraction: float, message: str) -> None:
        log.debug("%s: %3.0f%% %s", case.name, 100 * fraction, message)

    try:
        run_job(task, case.path, output_dir / case.name, model=loaded, device=device, overwrite=True,
                progress=progress, predict=task_function, force_modality=force_modality, series=series)
    except CancelledError as stop:
        if stop.written:  # the stop came as the outputs were published: the case is complete
            summary.done.append(case.name)
        raise
    except Exception as error:  # one bad case must not stop the batch
        summary.failed[case.name] = f"{type(error).__name__}: {error}"
        if isinstance(error, InputError):
            summary.refused.append(case.name)
        log.error("%s %s failed: %s", count, case.name, error)
        log.debug("%s", traceback.format_exc())
        return
    summary.done.append(case.name)
    log.info("%s %s done in %.1f s", count, case.name, time.monotonic() - case_start)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="SpineSegLib/batch.py", description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, choices=tasks.names())
    parser.add_argument("--input", required=True, help="an image file, a DICOM folder or a folder of images")
    parser.add_argument("--output", required=True, help="output folder (one sub-folder per case)")
    parser.add_argument("--device", default=DeviceChoice.AUTO.value, choices=[choice.value for choice in DeviceChoice])
    parser.add_argument("--model", default=None,
                        help="bundled model name, or path of a model's .json manifest or .safetensors weights")
    parser.add_argument("--overwrite", action="store_true", help="redo cases whose outputs exist")
    parser.add_argument("--force-modality", action="store_true",
                        help="run cases that do not look like the task's modality (vertebrae: CT, discs: MRI)")
    parser.add_argument("--series", action="append", default=[], metavar="UID",
                        help="for a DICOM folder holding several series: the one to read (a failed case lists them); "
                             "repeat for several folders")
    parser.add_argument("--verbose", action="store_true")
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--"]:  # Slicer passes the separator on
        arguments = arguments[1:]
    return parser.parse_args(arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the batch; returns the exit code and never raises.

    0: every case done or skipped; 1: a case failed, or the run itself
    failed (one line on stderr; the traceback with --verbose); 2: bad
    arguments or input; 3: the model cannot be loaded; 130: interrupted with
    Ctrl-C. A windowless Slicer must always get a code to exit with, or it
    would stay running.
    """
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        # From here on a stop is an exception the batch answers (summary so far, nothing partial), not an exit.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
        return _run(argv)
    except KeyboardInterrupt as error:  # outside the cases (their interruption is in the summary)
        print("SpineSeg batch: interrupted", file=sys.stderr)
        return exit_code(error)
    finally:
        # Run as the program, the batch has said how it ended: a stop while leaving must not change that.
        # Called from other code, that code's handlers come back.
        leaving = __name__ == "__main__"
        for signum, handler in zip((signal.SIGINT, signal.SIGTERM), previous):
            if leaving or handler is not None:  # None: installed outside Python, left as the batch set it
                signal.signal(signum, signal.SIG_IGN if leaving else handler)


def _run(argv: Sequence[str] | None) -> int:
    """The batch itself, for :func:`main`, which answers a stop outside the cases."""
    from spineseg.errors import ModelError, error_line

    try:
        options = parse_arguments(argv)
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2), already printed
        return stop.code if isinstance(stop.code, int) else EXIT_INPUT
    # The batch's own progress lines at INFO; other libraries (torch) only from WARNING unless --verbose.
    logging.basicConfig(level=logging.DEBUG if options.verbose else logging.WARNING, format="%(message)s")
    log.setLevel(logging.DEBUG if options.verbose else logging.INFO)
    try:
        summary = run_batch(
            options.input, options.output, options.task, options.device, options.model, options.overwrite,
            force_modality=options.force_modality, series=options.series,
        )
    except KeyboardInterrupt as error:  # before the first case: nothing done yet
        print("SpineSeg batch: interrupted before any case ran", file=sys.stderr)
        return exit_code(error)
    except (ModelError, ValueError) as error:  # InputError included: the model, the input or an option
        print(error_line("SpineSeg batch", error), file=sys.stderr)
        return exit_code(error)
    except Exception as error:  # the top of the program: report any failure as one line and an exit code
        print(f"SpineSeg batch: error: {type(error).__name__}: {error}", file=sys.stderr)
        log.debug("%s", traceback.format_exc())
        return EXIT_FAILURE
    print(summary.text())
    return summary.exit_code


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler stopping the job) ends the batch as Ctrl-C does."""
    raise KeyboardInterrupt


def _exit(code: int) -> None:
    """Leave the Slicer application if this runs in one (it would stay open otherwise), else Python.

    Plain Python leaves without its shutdown: every output is already in place and the streams are flushed
    here, and a stop that landed in the middle of torch's import can make that shutdown crash.
    """
    slicer = sys.modules.get("slicer")  # imported already inside the application; never imported here
    if slicer is not None and getattr(slicer, "app", None) is not None:
        slicer.util.exit(code)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
