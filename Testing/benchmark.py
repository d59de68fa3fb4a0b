"""Speed and memory of vertebra segmentation on one thoraco-lumbar phantom at 1 mm.

    .venv/bin/python Testing/benchmark.py [--runs 3] [--device cpu|cuda]
    .venv/bin/python Testing/benchmark.py --large    # memory on a 512 x 512 x 1000 CT

Prints the median wall time over runs, network forward passes, time per
forward pass, the share of time spent in the network, and peak resident
memory. The baseline for the ratio is the network alone, timed in the same
process on the same patches. ``--large`` instead segments one 512 x 512 x 1000
CT (a T1-sacrum phantom at 0.7 x 0.7 x 0.6 mm, padded with air to that size)
once and reports the peak memory above what the image itself takes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spineseg.io import write_volume
from spineseg.metrics import score_vertebrae
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.choices import Task
from spineseg.model_store import load_model
from spineseg.vertebrae.pipeline import segment_vertebrae
from spineseg.volume import Volume, VolumeKind
from stage_meter import StageMeter, peak_resident_mb

LARGE_SHAPE = (512, 512, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--large", action="store_true", help="peak memory on a 512 x 512 x 1000 CT instead")
    parser.add_argument("--job", nargs=2, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)  # one measured run
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.job:
        run_job_measured(*args.job, args.device)
        return
    if args.large:
        benchmark_large(args.device, args.threads, args.runs)
        return
    phantom = make_ct_phantom(list(range(13, 25)) + [26], spacing=(1.0, 1.0, 1.0), orientation="LPS", seed=1000)
    before = peak_resident_mb()
    model = load_model(Task.VERTEBRAE, None, args.device)
    times, passes = [], []
    for _ in range(args.runs):
        model.forward_passes = 0
        started = time.perf_counter()
        result = segment_vertebrae(phantom.image, model)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        passes.append(model.forward_passes)
    size = model.settings.patch_size
    patch = np.zeros((size, size, size), np.float32)
    model.predict(patch, patch > 0)
    started = time.perf_counter()
    for _ in range(20):
        model.predict(patch, patch > 0)
    per_pass = (time.perf_counter() - started) / 20
    scores = score_vertebrae(result.label_map.array, phantom.labels.array, phantom.image.spacing)
    median = statistics.median(times)
    print(f"phantom: {phantom.image.shape} voxels at 1 mm, {len(result.vertebrae)} vertebrae found, "
          f"mean Dice {scores.mean_dice:.3f}")
    print(f"device: {args.device} ({args.threads} threads), model {model.name}")
    print(f"wall time, median of {args.runs}: {median:.1f} s (runs: {', '.join(f'{t:.1f}' for t in times)})")
    print(f"forward passes: {statistics.median(passes):.0f}; time per forward pass: {1000 * per_pass:.0f} ms")
    print(f"network share of wall time: {statistics.median(passes) * per_pass / median:.2f}")
    print(f"peak resident memory: {peak_resident_mb():.0f} MB (before loading the model: {before:.0f} MB)")


def large_ct() -> Volume:
    """A T1-sacrum phantom at 0.7 x 0.7 x 0.6 mm, centred in a 512 x 512 x 1000 block of air (int16 HU)."""
    phantom = make_ct_phantom(list(range(8, 25)) + [26], spacing=(0.7, 0.7, 0.6), orientation="LPS", seed=1005)
    small = phantom.image.array
    if any(n > m for n, m in zip(small.shape, LARGE_SHAPE)):
        raise RuntimeError(f"the phantom {small.shape} does not fit in {LARGE_SHAPE}")
    array = np.full(LARGE_SHAPE, -1000, np.int16)
    offset = [(m - n) // 2 for n, m in zip(small.shape, LARGE_SHAPE)]
    array[tuple(slice(o, o + n) for o, n in zip(offset, small.shape))] = np.round(small).astype(np.int16)
    affine = phantom.image.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.asarray(offset, dtype=float)
    return Volume(array, affine, VolumeKind.INTENSITY)


def benchmark_large(device: str, threads: int, runs: int) -> None:
    """Segment one 512 x 512 x 1000 CT ``runs`` times, each in a fresh process; report time and memory by stage.

    A fresh process per run, because the peak of generating the phantom here
    would hide the peak of segmenting it. Each run is the ``spineseg
    vertebrae`` job (read, segment, write the label map, segmentation, JSON
    and picture).
    """
    volume = large_ct()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large_ct.nrrd"
        write_volume(volume, path)
        del volume
        reports = []
        for run in range(runs):
            command = [sys.executable, __file__, "--job", str(path), str(Path(folder) / f"out{run}"),
                       "--device", device, "--threads", str(threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            reports.append(json.loads(output.strip().splitlines()[-1]))
    seconds = [report["seconds"] for report in reports]
    print(f"CT: {LARGE_SHAPE} voxels, int16 ({np.prod(LARGE_SHAPE) * 2 / 2**20:.0f} MB), "
          f"{reports[0]['vertebrae']} vertebrae found, {reports[0]['forward_passes']} forward passes")
    print(f"device: {device} ({threads} threads); `spineseg vertebrae` job (read, segment, write), fresh process")
    print(f"wall time, median of {runs}: {statistics.median(seconds):.1f} s (runs: "
          f"{', '.join(f'{s:.1f}' for s in seconds)})")
    print(f"peak resident memory: {max(r['peak_mb'] for r in reports):.0f} MB (highest of the runs)")
    print_stages([report["stages"] for report in reports])


def print_stages(runs: list[dict[str, dict[str, float]]]) -> None:
    """Median time and highest peak resident memory of each stage over runs."""
    print("| stage | time, median (s) | peak resident memory (MB) |")
    print("|---|---|---|")
    for stage in runs[0]:
        seconds = statistics.median(run[stage]["seconds"] for run in runs if stage in run)
        peak = max(run[stage]["peak_mb"] for run in runs if stage in run)
        print(f"| {stage} | {seconds:.1f} | {peak:.0f} |")


def run_job_measured(input_path: str, output_dir: str, device: str) -> None:
    """One ``spineseg vertebrae`` job in this process; print its figures as one JSON line."""
    from spineseg.jobs import run_vertebrae

    meter = StageMeter()
    started = time.perf_counter()
    model = load_model(Task.VERTEBRAE, None, device)
    job = run_vertebrae(input_path, output_dir, model=model, device=device, progress=meter)
    seconds = time.perf_counter() - started
    stages = {name: vars(figures) for name, figures in meter.finish().items()}
    print(json.dumps({"seconds": seconds, "peak_mb": peak_resident_mb(), "vertebrae": len(job.result.vertebrae),
                      "forward_passes": model.forward_passes, "stages": stages}))


if __name__ == "__main__":
    main()
