"""Speed and memory of vertebra segmentation on one thoraco-lumbar phantom at 1 mm.

    .venv/bin/python Testing/benchmark.py [--runs 3] [--device cpu|cuda]

Prints the median wall time over runs, network forward passes, time per
forward pass, the share of time spent in the network, and peak resident
memory. The baseline for the ratio is the network alone, timed in the same
process on the same patches.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from spineseg.metrics import score_vertebrae
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.vertebrae.model import VertebraModel
from spineseg.vertebrae.pipeline import segment_vertebrae


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    phantom = make_ct_phantom(list(range(13, 25)) + [26], spacing=(1.0, 1.0, 1.0), orientation="LPS", seed=1000)
    before = peak_rss_mb()
    model = VertebraModel.from_checkpoint(None, args.device)
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


if __name__ == "__main__":
    main()
