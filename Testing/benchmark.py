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
import resource
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

LARGE_SHAPE = (512, 512, 1000)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--large", action="store_true", help="peak memory on a 512 x 512 x 1000 CT instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.large:
        benchmark_large(args.device)
        return
    phantom = make_ct_phantom(list(range(13, 25)) + [26], spacing=(1.0, 1.0, 1.0), orientation="LPS", seed=1000)
    before = peak_rss_mb()
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
    print(f"peak resident memory: {peak_rss_mb():.0f} MB (before loading the model: {before:.0f} MB)")


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


def benchmark_large(device: str) -> None:
    """Segment one 512 x 512 x 1000 CT with the ``spineseg`` command in a fresh process; report its peak memory.

    A separate process, because the peak of generating the phantom here would
    hide the peak of segmenting it.
    """
    volume = large_ct()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large_ct.nrrd"
        write_volume(volume, path)
        del volume
        command = [sys.executable, "-m", "spineseg.cli", "vertebrae", str(path), "-o", str(Path(folder) / "out"),
                   "--device", device]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        table = json.loads((Path(folder) / "out" / "vertebrae.json").read_text())
    child_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    print(f"CT: {LARGE_SHAPE} voxels, int16 ({np.prod(LARGE_SHAPE) * 2 / 2**20:.0f} MB), "
          f"{len(table['vertebrae'])} vertebrae found")
    print(f"device: {device}; one run of `spineseg vertebrae`: {seconds:.0f} s including reading and writing")
    print(f"peak resident memory of that process: {child_peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
