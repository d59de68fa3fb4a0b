"""The bundled vertebra model's work on the real CT in ../shared/data/real: forward passes, pieces, time, memory.

    .venv/bin/python tools/benchmark_real_ct.py [--runs 3] [--threads 2] [--device cpu|cuda] [--model NAME]
                                                  [--image CT]

Segments ``ct_totalseg_example/example_ct.nii.gz`` (3 mm, T11 to the sacrum,
about ten vertebrae) ``--runs`` times and prints the median wall time, the
forward passes and the pieces the walk accepted (both the same in every run:
the walk is deterministic), the vertebrae kept, peak resident memory and time
by stage. Target (issue 14): at most 150 forward passes and 10 s on 2 cores.
``--image`` times another CT instead (issue 28: the chest CT of ../shared/data/train within 30 s).
Skips, with a message and exit status 0, when ../shared is absent.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path

import torch

from benchmark import REAL_CT, print_stages, segment_measured
from spineseg.choices import Task
from spineseg.io import read_volume
from spineseg.model_store import load_model

PASS_TARGET = 150
SECONDS_TARGET = 10.0


class WalkRecorder(logging.Handler):
    """Keeps the walk's own report (pieces accepted, forward passes, why it stopped) from the pipeline's log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.walks: list[tuple[int, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("traversal:"):
            self.walks.append(tuple(record.args))  # (pieces, forward passes, stop reason)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="a bundled model's name or a manifest (default: the bundled default)")
    parser.add_argument("--image", type=Path, default=REAL_CT, help="the CT to segment (default: the shared real CT)")
    args = parser.parse_args()
    if not args.image.exists():
        print(f"skipped: the CT {args.image} is absent (the real data live in ../shared, outside the repository)")
        return 0
    torch.set_num_threads(args.threads)
    recorder = WalkRecorder()
    pipeline_log = logging.getLogger("spineseg.vertebrae.pipeline")
    pipeline_log.addHandler(recorder)
    pipeline_log.setLevel(logging.INFO)
    volume = read_volume(args.image)
    model = load_model(Task.VERTEBRAE, args.model, args.device)
    run = segment_measured(volume, model, args.runs)
    pieces, passes, reason = recorder.walks[-1]
    median = statistics.median(run["times"])
    print(f"CT: {args.image.parent.name}/{args.image.name}, {volume.shape} voxels, spacing "
          f"{tuple(round(s, 2) for s in volume.spacing)} mm; model {model.name}; {args.device}, {args.threads} threads")
    print(f"wall time, median of {args.runs}: {median:.1f} s (runs: {', '.join(f'{t:.1f}' for t in run['times'])}); "
          f"target <= {SECONDS_TARGET:.0f} s")
    print(f"forward passes: {passes} (target <= {PASS_TARGET}); pieces accepted by the walk: {pieces}; "
          f"vertebrae kept: {len(run['result'].vertebrae)}; the walk {reason}")
    print(f"peak resident memory while segmenting: {run['peak_mb']:.0f} MB")
    print_stages(run["stages"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
