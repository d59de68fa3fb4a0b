"""Speed and memory of vertebra segmentation, and the bundled model's cost against the published one's.

    .venv/bin/python tools/benchmark.py [--runs 3] [--threads 2] [--device cpu|cuda] [--published-passes 3]
    .venv/bin/python tools/benchmark.py --large [--runs 3]   # a 512 x 512 x 1000 CT

The default run segments a T1-sacrum phantom at 1 mm (``--runs`` times) and
the real CT in ../shared/data/real (once, if present) with the bundled model,
and prints wall time (median), forward passes, time per forward pass (median
of single passes), the network's share, peak resident memory and time by
stage. It then times forward passes of the published configuration (1 mm,
128^3 patches, 64 filters, built with ``spineseg.networks.unet3d`` and random
weights, which cost the same as trained ones) in the same process and thread
count, and prints the ratios. A walk with random weights finds nothing, so
the published whole run is estimated as forward passes x time per pass, with
the bundled model's pass count on the same scan: both patches span about
12 cm and the walk's rules are the same. ``--large`` segments one 512 x 512 x
1000 CT (a T1-sacrum phantom at 0.7 x 0.7 x 0.6 mm, padded with air) with the
``spineseg vertebrae`` job in fresh processes and prints time and peak memory
by stage.
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

from spineseg.choices import Task
from spineseg.io import read_volume, write_volume
from spineseg.metrics import score_vertebrae
from spineseg.model_store import load_model
from spineseg.networks.unet3d import IterativeFCN, IterativeFCNConfig
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.networks.vertebra_model import VertebraModel, VertebraModelSettings
from spineseg.vertebrae.pipeline import segment_vertebrae
from spineseg.volume import Volume, VolumeKind
from stage_meter import StageMeter

LARGE_SHAPE = (512, 512, 1000)
REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ct_totalseg_example" / "example_ct.nii.gz"
# The method as published (Lessmann et al.): 1 mm grid, 128^3 patches, 64 filters on every level.
PUBLISHED = VertebraModelSettings(spacing_mm=1.0, patch_size=128, network=IterativeFCNConfig(filters=64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--published-passes", type=int, default=3, help="forward passes of the published network")
    parser.add_argument("--large", action="store_true", help="a 512 x 512 x 1000 CT instead")
    # Steps of --large, each in a process of its own: write the CT; one measured job.
    parser.add_argument("--make-large", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--job", nargs=2, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.job:
        run_job_measured(*args.job, args.device)
    elif args.make_large:
        write_volume(large_ct(), args.make_large)
    elif args.large:
        benchmark_large(args.device, args.threads, args.runs)
    else:
        benchmark_phantom(args.device, args.threads, args.runs, args.published_passes)


def time_passes(model: VertebraModel, count: int) -> list[float]:
    """Seconds of ``count`` single forward passes on an empty patch (after one untimed pass)."""
    patch = np.zeros((model.settings.patch_size,) * 3, np.float32)
    model.predict(patch, patch > 0)
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        model.predict(patch, patch > 0)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds


def segment_measured(volume: Volume, model: VertebraModel, runs: int) -> dict:
    """Segment ``volume`` ``runs`` times: the last result, times, passes, and time and peak memory by stage."""
    times, passes, stages = [], [], []
    for _ in range(runs):
        model.forward_passes = 0
        meter = StageMeter()
        started = time.perf_counter()
        result = segment_vertebrae(volume, model, progress=meter)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        passes.append(model.forward_passes)
        stages.append({name: vars(figures) for name, figures in meter.finish().items()})
    return {"result": result, "times": times, "passes": statistics.median(passes), "stages": stages,
            "peak_mb": max(figures["peak_mb"] for run in stages for figures in run.values())}


def benchmark_phantom(device: str, threads: int, runs: int, published_passes: int) -> None:
    """The bundled model on a 1 mm T1-sacrum phantom and the real CT, then the published configuration's ratios."""
    phantom = make_ct_phantom(list(range(8, 25)) + [26], spacing=(1.0, 1.0, 1.0), orientation="LPS", seed=1000)
    model = load_model(Task.VERTEBRAE, None, device)
    run = segment_measured(phantom.image, model, runs)
    per_pass = statistics.median(time_passes(model, 20))
    median = statistics.median(run["times"])
    scores = score_vertebrae(run["result"].label_map.array, phantom.labels.array, phantom.image.spacing)
    print(f"device: {device} ({threads} threads), model {model.name}")
    print(f"T1-sacrum phantom: {phantom.image.shape} voxels at 1 mm, {len(run['result'].vertebrae)} vertebrae found, "
          f"mean Dice {scores.mean_dice:.3f}")
    print(f"wall time, median of {runs}: {median:.1f} s (runs: {', '.join(f'{t:.1f}' for t in run['times'])})")
    print(f"forward passes: {run['passes']:.0f}; time per forward pass, median of 20: {1000 * per_pass:.0f} ms")
    print(f"network share of wall time: {run['passes'] * per_pass / median:.2f}")
    print(f"peak resident memory while segmenting: {run['peak_mb']:.0f} MB")
    print_stages(run["stages"])
    if REAL_CT.exists():
        real = segment_measured(read_volume(REAL_CT), model, 1)
        print(f"real CT ({REAL_CT.parent.name}, {real['result'].label_map.shape} voxels at 3 mm): "
              f"{real['passes']:.0f} forward passes, {real['times'][0]:.1f} s, "
              f"{len(real['result'].vertebrae)} vertebrae found")
    else:
        print(f"real CT: {REAL_CT} is absent; skipped")
    del model
    published = VertebraModel(IterativeFCN(PUBLISHED.network), PUBLISHED, device)  # random weights
    meter = StageMeter(first="published")
    published_times = time_passes(published, published_passes)
    published_peak = meter.finish()["published"].peak_mb
    published_per_pass = statistics.median(published_times)
    print(f"published configuration (1 mm, 128^3 patches, 64 filters, random weights): time per forward pass, "
          f"median of {published_passes}: {published_per_pass:.1f} s "
          f"(passes: {', '.join(f'{t:.1f}' for t in published_times)})")
    rows = [
        ("time per forward pass (s)", per_pass, published_per_pass, "{:.3f}"),
        ("forward passes, T1-sacrum phantom", run["passes"], run["passes"], "{:.0f}"),
        ("whole run (s)", median, run["passes"] * published_per_pass, "{:.1f}"),
        ("peak resident memory (MB)", run["peak_mb"], published_peak, "{:.0f}"),
    ]
    print("| figure | bundled (3 mm, 40^3, 16 filters) | published (1 mm, 128^3, 64 filters) | published / bundled |")
    print("|---|---|---|---|")
    for name, bundled_value, published_value, form in rows:
        print(f"| {name} | {form.format(bundled_value)} | {form.format(published_value)} | "
              f"{published_value / bundled_value:.1f} |")
    print("published: passes estimated as the bundled model's (same walk, patches of about 12 cm); whole run = "
          "passes x time per pass; peak memory while running its forward passes")


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

    The phantom is made in a process of its own and each run is a fresh
    process, because Linux carries a process's peak memory over into the
    programs it starts: the peak of making the phantom (about 3.6 GB) would
    otherwise hide the peak of segmenting it. Each run is the ``spineseg
    vertebrae`` job (read, segment, write the label map, segmentation, JSON
    and picture).
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large_ct.nrrd"
        subprocess.run([sys.executable, __file__, "--make-large", str(path)], check=True)
        reports = []
        for run in range(runs):
            command = [sys.executable, __file__, "--job", str(path), str(Path(folder) / f"out{run}"),
                       "--device", device, "--threads", str(threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            reports.append(json.loads(output.strip().splitlines()[-1]))
    seconds = [report["seconds"] for report in reports]
    print(f"CT: {LARGE_SHAPE} voxels, int16 ({np.prod(LARGE_SHAPE) * 2 / 2**20:.0f} MB), "
          f"{reports[0]['vertebrae']} vertebrae found, {reports[0]['forward_passes']} forward passes")
    print(f"device: {device} ({threads} threads); `spineseg vertebrae` job (read, segment, write; model loaded "
          "beforehand), fresh process")
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

    model = load_model(Task.VERTEBRAE, None, device)
    meter = StageMeter()
    started = time.perf_counter()
    job = run_vertebrae(input_path, output_dir, model=model, device=device, progress=meter)
    seconds = time.perf_counter() - started
    stages = {name: vars(figures) for name, figures in meter.finish().items()}
    peak = max(figures["peak_mb"] for figures in stages.values())
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "vertebrae": len(job.result.vertebrae),
                      "forward_passes": model.forward_passes, "stages": stages}))


if __name__ == "__main__":
    main()
