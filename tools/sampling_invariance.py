"""The shared real CT at other samplings: does the same anatomy get the same names, volumes and places?

    .venv/bin/python tools/sampling_invariance.py [--copies 1.5 1 4 1x1x5 mirrored] [--model NAME] [--json OUT]

Segments ``ct_totalseg_example/example_ct.nii.gz`` (3 mm) as it is and as
copies made from it (:func:`spineseg.perturbation.resampled_scan`: finer axes
interpolated linearly, coarser ones averaged over each new voxel; ``mirrored``:
the first axis stored reversed). For each copy and level: the volume against
the plain run's, the centroid's shift (mm), and the Dice by level of the copy's
labels, resampled back onto the 3 mm grid (nearest), against the reference
labels (TotalSegmentator's output, so agreement, not accuracy) beside the plain
run's. Skips, with a message and exit status 0, when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spineseg.choices import Task
from spineseg.geometry import Grid, resample_to
from spineseg.io import read_volume
from spineseg.labels import vertebra_name
from spineseg.metrics import dice
from spineseg.model_store import load_model
from spineseg.perturbation import mirrored_scan, resampled_scan
from spineseg.training.label_mapping import TOTALSEGMENTATOR, apply_mapping
from spineseg.vertebrae.pipeline import segment_vertebrae
from spineseg.volume import Volume, VolumeKind

FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ct_totalseg_example"
SCORED_LEVELS = (19, 20, 21, 22, 23, 24)  # T12-L5: whole in the scan and in its reference


def copy_of(image: Volume, name: str) -> Volume:
    """``mirrored``, one voxel size (``1.5``) or three (``1x1x5``, along the scan's own axes)."""
    if name == "mirrored":
        return mirrored_scan(image)
    sizes = [float(size) for size in name.split("x")]
    return resampled_scan(image, tuple(sizes * 3 if len(sizes) == 1 else sizes))


def measured(image: Volume, reference: np.ndarray, grid: Grid, model) -> dict:
    """One run: its levels, volumes (ml), centroids (RAS mm) and Dice by level on the 3 mm ``grid``."""
    started = time.time()
    result = segment_vertebrae(image, model)
    seconds = time.time() - started
    labels = resample_to(result.label_map, grid).array
    return {
        "shape": list(image.shape), "seconds": round(seconds, 1),
        "levels": [vertebra_name(r.level) for r in result.vertebrae],
        "volume_ml": {r.level: r.volume_ml for r in result.vertebrae},
        "centroid": {r.level: np.array(r.centroid_ras) for r in result.vertebrae},
        "dice": {level: dice(labels == level, reference == level) for level in SCORED_LEVELS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", nargs="+", default=["1.5", "1", "4", "1x1x5", "mirrored"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (FOLDER / "example_ct.nii.gz").exists():
        print(f"skipped: the real CT is absent from {FOLDER} (the real data live in ../shared, outside the repository)")
        return 0
    model = load_model(Task.VERTEBRAE, args.model, "cpu")
    scan = read_volume(FOLDER / "example_ct.nii.gz")
    grid = Grid(scan.shape, scan.affine)
    seg = resample_to(read_volume(FOLDER / "example_seg_fast_force_split.nii.gz", VolumeKind.LABEL), grid).array
    reference = apply_mapping(seg, TOTALSEGMENTATOR)
    plain = measured(scan, reference, grid, model)
    print(f"plain 3 mm {plain['shape']} {plain['seconds']} s: {'-'.join(plain['levels'][::len(plain['levels']) - 1])};"
          f" Dice by level " + " ".join(f"{plain['dice'][lv]:.3f}" for lv in SCORED_LEVELS)
          + f" (mean {np.mean(list(plain['dice'].values())):.3f})")
    summary = {"plain": {k: v for k, v in plain.items() if k != "centroid"}}
    for name in args.copies:
        run = measured(copy_of(scan, name), reference, grid, model)
        common = [level for level in plain["volume_ml"] if level in run["volume_ml"]]
        ratio = {level: run["volume_ml"][level] / plain["volume_ml"][level] for level in common}
        shift = {level: float(np.linalg.norm(run["centroid"][level] - plain["centroid"][level])) for level in common}
        print(f"{name} {run['shape']} {run['seconds']} s: names {'same' if run['levels'] == plain['levels'] else run['levels']}")
        for level in common:
            print(f"  {vertebra_name(level):>6} volume {ratio[level]:6.1%}  shift {shift[level]:5.1f} mm")
        print("  Dice by level " + " ".join(f"{run['dice'][lv]:.3f}" for lv in SCORED_LEVELS)
              + f" (mean {np.mean(list(run['dice'].values())):.3f})", flush=True)
        summary[name] = {"levels": run["levels"], "seconds": run["seconds"], "volume_ratio": ratio, "shift_mm": shift,
                         "dice": run["dice"]}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
