"""Wall time (median of 3) and peak memory of labelling one phantom MRI on the CPU.

    python tools/benchmark_discs.py [--model PATH] [--threads 1]

Measures ``run_discs`` (read, slab, network, decode, three output files) on a
lumbar T2 phantom (seed 7) of 20 x 365 x 225 voxels (3.5 x 0.9 x 0.9 mm).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from spineseg.choices import Task
from spineseg.jobs import run_discs
from spineseg.model_store import load_model
from spineseg.io import write_volume
from spineseg.phantoms.mri import make_mri_phantom


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(Task.DISCS, args.model, "cpu")
    phantom = make_mri_phantom("lumbar", contrast="T2", seed=7)
    work = Path(tempfile.mkdtemp(prefix="spineseg-bench-"))
    try:
        source = work / "lumbar_t2.nii.gz"
        write_volume(phantom.image, source)
        run_discs(source, work / "warmup", model=model, device="cpu")
        times, peaks = [], []
        for run in range(3):
            tracemalloc.start()
            start = time.perf_counter()
            run_discs(source, work / f"run{run}", model=model, device="cpu")
            times.append(time.perf_counter() - start)
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| image | {phantom.image.shape} voxels, spacing {tuple(round(float(s), 2) for s in phantom.image.spacing)} mm |")
    print("|---|---|")
    print(f"| model | {model.name}, features {model.network.config.features} |")
    print(f"| threads | {args.threads} |")
    print(f"| wall time, median of 3 | {statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}) |")
    print(f"| peak traced Python/numpy memory | {max(peaks):.0f} MiB |")
    print(f"| peak resident memory of the process | {rss:.0f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
