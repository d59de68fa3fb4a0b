"""Scores of a vertebra model on held-out phantoms and on the real CT in ../shared/data/real.

    .venv/bin/python Testing/evaluate_vertebrae.py [--model NAME_OR_PATH] [--json OUT.json] [--more]
                                                   [--perturb] [--no-phantoms]

Held-out phantoms use seeds from 1000 up (training used seeds below 1000),
at 1 mm, in several orientations. The target (mean Dice >= 0.90, every level
named right) is judged on the first five; ``--more`` adds five others (the
upper cervical spine, a 2 mm-slice scan, short lumbosacral runs) as a check
that changes tuned on the first five carry over. The real CT's reference labels were made by
TotalSegmentator (a model), so its score is agreement, not accuracy.
``--perturb`` reads each real CT again nine ways (leaning 4 degrees each way,
8 % smaller and larger, values above 0 HU 15 % lower and higher) and reports
every reading and the means.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spineseg.metrics import score_vertebrae
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.choices import Task
from spineseg.vertebrae.real_scans import (CT_PERTURBATIONS, DEFAULT_REAL_FOLDER, perturbed_ct, read_real_cts,
                                          score_real_ct)
from spineseg.model_store import load_model
from spineseg.networks.vertebra_model import VertebraModel
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


def evaluate_phantoms(model: VertebraModel, cases: list, refine: bool = True) -> list[dict]:
    rows = []
    for levels, spacing, orientation, seed in cases:
        phantom = make_ct_phantom(levels, spacing=spacing, orientation=orientation, seed=seed)
        started = time.time()
        result = segment_vertebrae(phantom.image, model, refine_with_bone=refine)
        scores = score_vertebrae(result.label_map.array, phantom.labels.array, phantom.image.spacing)
        rows.append({
            "case": f"phantom seed {seed}, {orientation}, spacing {spacing}",
            "seconds": round(time.time() - started, 1),
            **scores.summary(),
            "per_vertebra_dice": {str(s.level): round(s.dice, 3) for s in scores.vertebrae},
        })
        print(rows[-1])
    return rows


def evaluate_real_ct(model: VertebraModel, refine: bool = True) -> list[dict]:
    """The whole pipeline on each real CT of ../shared/data/real (none when that folder is absent)."""
    if not DEFAULT_REAL_FOLDER.is_dir():
        return []
    rows = []
    for scan in read_real_cts(DEFAULT_REAL_FOLDER):
        started = time.time()
        result = segment_vertebrae(scan.image, model, refine_with_bone=refine)
        scores = score_vertebrae(result.label_map.array, scan.reference, scan.image.spacing)
        rows.append({
            "case": f"{scan.name}, reference = TotalSegmentator output",
            "seconds": round(time.time() - started, 1),
            "predicted_levels": result.levels,
            "anchor": result.naming.anchor if result.naming else None,
            "scored_levels": list(scan.scored_levels),
            **{f"scored_{k}": round(v, 4) for k, v in score_real_ct(result.label_map.array, scan).items()},
            "per_vertebra_dice": {str(s.level): round(s.dice, 3) for s in scores.vertebrae},
            "per_vertebra_matched_dice": {str(s.level): round(s.matched_dice, 3) for s in scores.vertebrae},
        })
        print(rows[-1])
    return rows


def evaluate_real_ct_perturbed(model: VertebraModel, refine: bool = True) -> dict:
    """Each real CT read under every ``CT_PERTURBATIONS`` change: the scored levels' mean Dice and share named
    right each time, and their means (one reading of two scans can be luck)."""
    if not DEFAULT_REAL_FOLDER.is_dir():
        return {}
    cases = {}
    for scan in read_real_cts(DEFAULT_REAL_FOLDER):
        readings = {}
        for change in CT_PERTURBATIONS:
            changed = perturbed_ct(scan, change)
            result = segment_vertebrae(changed.image, model, refine_with_bone=refine)
            readings[change.name] = {k: round(v, 3) for k, v in score_real_ct(result.label_map.array, changed).items()}
            print(changed.name, readings[change.name], flush=True)
        cases[scan.name] = {"mean_dice": round(float(np.mean([r["dice"] for r in readings.values()])), 4),
                            "mean_named": round(float(np.mean([r["named"] for r in readings.values()])), 4),
                            "readings": readings}
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-bone-refinement", action="store_true")
    parser.add_argument("--more", action="store_true", help="also score five more held-out phantoms")
    parser.add_argument("--perturb", action="store_true",
                        help="also read each real CT tilted 4 degrees, 8 %% smaller or larger and with soft tissue "
                             "and bone 15 %% darker or brighter (CT_PERTURBATIONS), and report each reading")
    parser.add_argument("--phantoms", action=argparse.BooleanOptionalAction, default=True,
                        help="score the held-out phantoms (--no-phantoms: the real CTs only)")
    args = parser.parse_args()
    model = load_model(Task.VERTEBRAE, args.model, "cpu")
    refine = not args.no_bone_refinement
    summary = {"model": model.name, "bone_refinement": refine}
    groups = {"phantoms": HELD_OUT, "more_phantoms": MORE_HELD_OUT} if args.more else {"phantoms": HELD_OUT}
    if not args.phantoms:
        groups = {}
    for group, cases in groups.items():
        rows = evaluate_phantoms(model, cases, refine)
        summary[group] = rows
        summary[f"{group}_mean_dice"] = round(float(np.mean([r["mean_dice"] for r in rows])), 4)
        summary[f"{group}_identification_rate"] = round(float(np.mean([r["identification_rate"] for r in rows])), 4)
    summary["real_ct"] = evaluate_real_ct(model, refine)
    if args.perturb:
        summary["real_ct_perturbed"] = evaluate_real_ct_perturbed(model, refine)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("phantoms", "more_phantoms", "real_ct")}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
