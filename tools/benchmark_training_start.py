"""Time from starting ``spineseg train vertebrae`` to its first training iteration, cold and on a prepared data set.

    python tools/benchmark_training_start.py --runs 3 --threads 2

Builds a small VerSe-layout data set in a temporary folder (``--cases`` CT
phantoms of seven vertebrae at 1 mm, e.g. ``rawdata/sub-001/sub-001_ct.nii.gz`` and
``derivatives/sub-001/sub-001_seg-vert_msk.nii.gz``), then for each of
``--runs`` rounds starts the installed console script (``spineseg`` beside
this Python) three times, each with a fresh run folder:

* ``--prepare-only`` into an empty preprocessing cache (timed to its exit);
* training on that prepared cache ("prepared");
* training with another, empty cache ("cold": every CT is read and resampled first).

A training run is timed from just before its process starts until the first
data row appears in ``RUN/metrics.csv`` (``--set log_interval=1``, so that is
the end of iteration 1), then it is stopped with SIGTERM. Validation is left
at its next interval, after the first row. The cache folder is pointed at the
temporary folder through ``$SPINESEG_CACHE``, so runs are independent and the
user's cache is untouched. ``--threads`` goes to the trainer
(``--set threads=N``) and, as ``OMP_NUM_THREADS`` and
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``, to the whole process.

Prints the medians as a table: wall time (what the user waits) and the
process's own CPU time (user + system, read from ``/proc`` when the row
appears), which a machine busy with other work does not inflate. Then
whether the goal of issue 18 (first iteration within 10 s of wall time on a
prepared data set) is met. ``--keep`` keeps the folder with the logs.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GOAL_SECONDS = 10.0  # issue 18: first iteration within this on a prepared data set
POLL_SECONDS = 0.05
LEVELS_PER_CASE = 7
FIRST_LEVEL = 13  # T6; each case starts one level lower than the one before, down to T12-L5 + sacrum, then again


@dataclass
class Start:
    """One timed training start."""

    first_row_s: float  # process start to the first row of metrics.csv
    iteration_s: float  # the row's own "seconds": the trainer's time from its loop's start to that row
    cpu_s: float  # CPU time (user + system, all threads) of the process when the row was seen; nan off Linux


def console_command() -> list[str]:
    """The installed ``spineseg`` script beside this Python, else what it runs."""
    script = Path(sys.executable).with_name("spineseg")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from spineseg.entry import main; sys.exit(main())"]


def build_dataset(root: Path, cases: int) -> str:
    """Write ``cases`` 1 mm CT phantoms in the VerSe layout under ``root``; returns a line describing them."""
    from spineseg.anatomy import STANDARD_LEVELS
    from spineseg.io import write_volume
    from spineseg.phantoms.ct import make_ct_phantom

    starts = STANDARD_LEVELS.index(FIRST_LEVEL)
    choices = len(STANDARD_LEVELS) - LEVELS_PER_CASE + 1 - starts
    voxels = []
    for index in range(cases):
        first = starts + index % choices
        levels = STANDARD_LEVELS[first:first + LEVELS_PER_CASE]
        phantom = make_ct_phantom(levels, spacing=1.0, orientation="LPS", seed=1800 + index)
        name = f"sub-{index + 1:03d}"
        write_volume(phantom.image, root / "rawdata" / name / f"{name}_ct.nii.gz")
        write_volume(phantom.labels, root / "derivatives" / name / f"{name}_seg-vert_msk.nii.gz")
        voxels.append(phantom.image.array.size)
    size_mb = sum(path.stat().st_size for path in root.rglob("*.nii.gz")) / 1e6
    return (f"{cases} CT phantoms of {LEVELS_PER_CASE} vertebrae at 1 mm, {min(voxels) / 1e6:.1f}-"
            f"{max(voxels) / 1e6:.1f} M voxels each, {size_mb:.0f} MB of .nii.gz")


def train_arguments(data: Path, run: Path, threads: int, device: str) -> list[str]:
    """The ``spineseg train vertebrae`` arguments of a timed run (and, with --prepare-only, of the preparation)."""
    return ["train", "vertebrae", "--data", str(data), "--out", str(run), "--device", device,
            "--set", "iterations=20", "--set", "log_interval=1", "--set", "validation.interval=1000",
            "--set", f"threads={threads}"]


def child_environment(cache: Path, threads: int) -> dict[str, str]:
    environment = dict(os.environ, SPINESEG_CACHE=str(cache), OMP_NUM_THREADS=str(threads),
                       ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads))
    environment.pop("XDG_CACHE_HOME", None)
    return environment


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (Linux ``/proc``), nan where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime and stime, fields 14 and 15


def first_row(metrics: Path) -> dict[str, str] | None:
    """The first complete data row of ``metrics.csv``, or None while there is none."""
    try:
        text = metrics.read_text()
    except FileNotFoundError:
        return None
    lines = text.splitlines(keepends=True)
    if len(lines) < 2 or not lines[1].endswith("\n"):
        return None
    return next(csv.DictReader(lines[:2]))


def time_prepare(command: list[str], environment: dict[str, str], log: Path, timeout_s: float) -> tuple[float, float]:
    """Wall and CPU seconds of a ``--prepare-only`` run, start to exit."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "wb") as stream:
        result = subprocess.run(command, env=environment, stdout=stream, stderr=subprocess.STDOUT, timeout=timeout_s)
    seconds = time.perf_counter() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"--prepare-only exited with {result.returncode}:\n{log.read_text()[-2000:]}")
    return seconds, now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime


def time_first_iteration(command: list[str], environment: dict[str, str], run: Path, log: Path,
                         timeout_s: float) -> Start:
    """Start ``command``, wait for the first row of ``run/metrics.csv``, stop the process; time to that row."""
    metrics = run / "metrics.csv"
    with open(log, "wb") as stream:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=environment, stdout=stream, stderr=subprocess.STDOUT)
        try:
            while (row := first_row(metrics)) is None:
                if process.poll() is not None:
                    raise RuntimeError(f"training exited with {process.returncode} before its first iteration:\n"
                                       f"{log.read_text()[-2000:]}")
                if time.perf_counter() - start > timeout_s:
                    raise RuntimeError(f"no iteration within {timeout_s:.0f} s:\n{log.read_text()[-2000:]}")
                time.sleep(POLL_SECONDS)
            seen = time.perf_counter() - start
            cpu = cpu_seconds(process.pid)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the trainer stops between two steps
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return Start(seen, float(row["seconds"]), cpu)


def table_line(name: str, wall: list[float], cpu: list[float]) -> str:
    """One line of the table: medians of wall and CPU time, then each run's wall time."""
    return (f"| {name:<38} | {statistics.median(wall):7.2f} s | {statistics.median(cpu):7.2f} s | "
            f"{', '.join(f'{value:.2f}' for value in wall)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of prepare-only, prepared and cold start")
    parser.add_argument("--cases", type=int, default=4, help="CT phantoms in the data set (at least 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the training process")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed to each start")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, caches, logs)")
    args = parser.parse_args(argv)
    if args.cases < 2 or args.runs < 1 or args.threads < 1:
        parser.error("--cases must be at least 2 (one validation subject), --runs and --threads at least 1")

    work = Path(tempfile.mkdtemp(prefix="spineseg-train-start-"))
    try:
        data = work / "data"
        print(f"building the data set in {data} ...", file=sys.stderr)
        built = time.perf_counter()
        description = build_dataset(data, args.cases)
        print(f"{description} ({time.perf_counter() - built:.0f} s to build)", file=sys.stderr)
        script = console_command()
        preparations: list[tuple[float, float]] = []  # wall and CPU seconds
        prepared: list[Start] = []
        cold: list[Start] = []
        for number in range(1, args.runs + 1):
            folder = work / f"round{number}"
            folder.mkdir()
            cache = folder / "cache-prepared"
            arguments = train_arguments(data, folder / "run-prepare", args.threads, args.device)
            preparations.append(time_prepare([*script, *arguments, "--prepare-only"],
                                             child_environment(cache, args.threads), folder / "prepare.log",
                                             args.timeout))
            arguments = train_arguments(data, folder / "run-prepared", args.threads, args.device)
            prepared.append(time_first_iteration([*script, *arguments], child_environment(cache, args.threads),
                                                 folder / "run-prepared", folder / "prepared.log", args.timeout))
            arguments = train_arguments(data, folder / "run-cold", args.threads, args.device)
            cold.append(time_first_iteration([*script, *arguments],
                                             child_environment(folder / "cache-cold", args.threads),
                                             folder / "run-cold", folder / "cold.log", args.timeout))
            wall, cpu = preparations[-1]
            print(f"round {number} (wall / CPU): prepare-only {wall:.2f} / {cpu:.2f} s, "
                  f"prepared {prepared[-1].first_row_s:.2f} / {prepared[-1].cpu_s:.2f} s, "
                  f"cold {cold[-1].first_row_s:.2f} / {cold[-1].cpu_s:.2f} s", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    shown = train_arguments(Path("DATA"), Path("RUN"), args.threads, args.device)
    cold_wall = [start.first_row_s for start in cold]
    prepared_wall = [start.first_row_s for start in prepared]
    cold_cpu = [start.cpu_s for start in cold]
    prepared_cpu = [start.cpu_s for start in prepared]
    ratio_wall = statistics.median(cold_wall) / statistics.median(prepared_wall)
    ratio_cpu = statistics.median(cold_cpu) / statistics.median(prepared_cpu)
    print(f"benchmark: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"timed:     {shlex.join(['spineseg', *shown])}")
    print("           from process start to the first row of RUN/metrics.csv (end of iteration 1)")
    print(f"prepared:  {shlex.join(['spineseg', *shown, '--prepare-only'])} first, into an empty $SPINESEG_CACHE")
    print(f"data:      {description}")
    print(f"threads:   {args.threads}; medians of {args.runs} run(s); CPU = the process's own user + system time")
    print()
    print(f"| {'measurement':<38} | {'wall':>9} | {'CPU':>9} | wall of each run |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 11}|------------------|")
    print(table_line("prepare-only (start to exit)", [wall for wall, _ in preparations],
                     [cpu for _, cpu in preparations]))
    print(table_line("first iteration, cold (empty cache)", cold_wall, cold_cpu))
    print(table_line("first iteration, prepared data set", prepared_wall, prepared_cpu))
    loop = [start.iteration_s for start in prepared]
    print(f"| {'  of which iteration 1 itself':<38} | {statistics.median(loop):7.2f} s | {'':>9} | "
          f"{', '.join(f'{value:.2f}' for value in loop)} |")
    print(f"| {'cold / prepared':<38} | {ratio_wall:7.2f}   | {ratio_cpu:7.2f}   |                  |")
    print()
    median = statistics.median(prepared_wall)
    verdict = "met" if median <= GOAL_SECONDS else "NOT met"
    print(f"goal (issue 18): first iteration within {GOAL_SECONDS:.0f} s on a prepared data set: {verdict} "
          f"({median:.2f} s wall, {statistics.median(prepared_cpu):.2f} s CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
