"""Scores of a disc model on held-out phantoms and on the real MRIs in shared/data/real.

Usage (reproduces the figures in the model card and the README):

    python tools/evaluate_discs.py [--model PATH] [--phantoms 40] [--seed 1000] [--out scores.json]

Held-out phantoms use seeds the training never saw (training: seed 0 stream),
finer in-plane spacing than training (0.5-1.0 mm) and named fields of view
that include an anchor (C1/C2 or the sacrum); thoracic-only fields of view,
which carry no anchor, are scored separately.

Real MRIs (skipped if ../shared/data/real is absent) have no disc-centre
ground truth, so they are scored head to foot only, as in issue 15's
done-when (see spineseg.evaluation.real_mris): discs named right within 5 mm
(PAM50, 18 discs; thoraco-lumbar T2, T9/T10) or 3 mm (SCT cervical T2,
C3/C4 and C4/C5 half-way between the marked bodies), and the 18 real
lumbar exams (104 discs, 5 mm) pooled: discs named right and exams entirely
right (issue 29's done-when). The phantom and real
scores are printed side by side at the end. With --perturb each real MRI is
read again tilted 4 degrees each way, 8 % smaller and larger and with two
other contrasts, and the counts of each reading and their mean are reported:
one reading of three scans can be luck. With --lean DEGREES the held-out
phantoms are scored again leaning that far to each side (a patient lying
off the scanner's axis; the slab has to follow the spine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from spineseg.evaluation.disc_metrics import score_discs, summarise
from spineseg.choices import Task
from spineseg.networks.disc_model import DiscModel
from spineseg.discs.decode import DecodeSettings
from spineseg.discs.pipeline import label_discs
from spineseg.model_store import load_model
from spineseg.pictures import write_discs_picture
from spineseg.evaluation.real_mris import (PERTURBATIONS, Perturbation, RealScan, is_lumbar_exam, load_real_scans,
                                      lumbar_summary, perturbed_scan, score_real_scan)
from spineseg.phantoms.mri import FIELDS_OF_VIEW, random_mri_phantom

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
ANCHORED = ["cervical", "cervicothoracic", "thoracolumbar", "lumbar"]
# Anchors that never fire: the network's names, as the decoder gave them before anchored decoding.
NO_ANCHORS = DecodeSettings(anchor_score=float("inf"))


def evaluate_phantoms(model: DiscModel, count: int, seed: int, fields: list[str],
                      settings: DecodeSettings = DecodeSettings(), change: Perturbation | None = None) -> dict:
    """Label ``count`` fresh phantoms cycling through ``fields`` and both contrasts (each changed by ``change``,
    its disc points with it, when given)."""
    rng = np.random.default_rng(seed)
    scores, seconds = [], []
    for index in range(count):
        field = fields[index % len(fields)]
        contrast = ("T1", "T2")[(index // len(fields)) % 2]
        phantom = random_mri_phantom(rng, contrast=contrast, levels=FIELDS_OF_VIEW[field], fast=False)
        image, points = phantom.image, phantom.disc_points
        if change is not None:
            changed = perturbed_scan(RealScan("phantom", image, dict(points), 0.0), change)
            image, points = changed.image, changed.reference
        start = time.time()
        result = label_discs(image, model, device="cpu", settings=settings)
        seconds.append(time.time() - start)
        scores.append(score_discs(result.discs, points))
    summary = summarise(scores)
    summary["seconds_per_image"] = float(np.median(seconds))
    summary["fields_of_view"] = fields
    return summary


def evaluate_real(model: DiscModel, picture_dir: Path | None, settings: DecodeSettings = DecodeSettings()) -> dict:
    """Each real MRI labelled whole and scored as in issue 15's done-when (see spineseg.evaluation.real_mris)."""
    if not REAL.is_dir():
        return {"skipped": f"{REAL} not found"}
    cases, scores = {}, []
    for scan in load_real_scans(REAL):
        start = time.time()
        result = label_discs(scan.image, model, device="cpu", settings=settings)
        score = score_real_scan(scan, result.discs)
        scores.append(score)
        cases[scan.name] = {**score.to_dict(), "tolerance_mm": scan.tolerance_mm, "naming": result.naming.to_dict(),
                            "warnings": result.warnings, "seconds": round(time.time() - start, 2)}
        if picture_dir is not None:
            picture_dir.mkdir(parents=True, exist_ok=True)
            write_discs_picture(result, picture_dir / f"{scan.name}.png", title=f"{scan.name}: {result.numbers}")
    cases["lumbar_exams"] = lumbar_summary(scores)
    return cases


def evaluate_real_perturbed(model: DiscModel, settings: DecodeSettings = DecodeSettings()) -> dict:
    """Each real MRI read under every ``PERTURBATIONS`` change (tilts, sizes, contrasts): discs named right each
    time, and their mean, which is less a matter of luck than one reading."""
    if not REAL.is_dir():
        return {"skipped": f"{REAL} not found"}
    cases, by_reading = {}, {change.name: [] for change in PERTURBATIONS}
    for scan in load_real_scans(REAL):
        counts = []
        for change in PERTURBATIONS:
            changed = perturbed_scan(scan, change)
            result = label_discs(changed.image, model, device="cpu", settings=settings)
            score = score_real_scan(changed, result.discs)
            by_reading[change.name].append(score)
            counts.append(score.named_right)
        if is_lumbar_exam(scan.name):
            continue  # pooled below
        cases[scan.name] = {"reference": len(scan.reference), "mean_named_right": round(float(np.mean(counts)), 2),
                            "named_right": dict(zip((change.name for change in PERTURBATIONS), counts))}
    pooled = {name: lumbar_summary(scores) for name, scores in by_reading.items()}
    cases["lumbar_exams"] = {name: {key: summary[key] for key in ("named_right", "reference", "exams_all_right")}
                             for name, summary in pooled.items()}
    return cases


def side_by_side(report: dict) -> str:
    """Phantom and real scores as one small table."""
    lines = [f"{'set':<24} {'score':>22} {'median mm':>10} {'missed':>7}"]
    for key in ("held_out_phantoms", "thoracic_only_phantoms", *(k for k in report if k.startswith("leaning_"))):
        summary = report[key]
        lines.append(f"{key:<24} {'labels right ' + format(summary['label_accuracy'], '.1%'):>22} "
                     f"{summary['median_distance_mm']:>10.2f} {summary['false_negative_rate']:>7.1%}")
    for name, case in report["real_mri_head_to_foot_only"].items():
        if "skipped" in case or not isinstance(case, dict):
            lines.append(f"{name:<24} skipped")
            continue
        if name == "lumbar_exams":
            lines.append(f"{'18 lumbar exams':<24} {case['named_right']:>3}/{case['reference']:<3} within 5 mm, "
                         f"{case['exams_all_right']}/{case['exams']} exams all right: "
                         f"{list(case['per_exam'].values())}")
            continue
        anchor = case["naming"]["anchor"] or "unanchored"
        lines.append(f"{name:<24} {case['named_right']:>3}/{case['reference']:<3} within {case['tolerance_mm']:g} mm"
                     f" ({anchor}) {case['predicted_numbers']}")
    for name, case in report.get("real_mri_perturbed", {}).items():
        if name == "lumbar_exams":
            for reading, pooled in case.items():
                lines.append(f"{'lumbar, ' + reading:<24} {pooled['named_right']:>3}/{pooled['reference']:<3} "
                             f"{pooled['exams_all_right']} exams all right")
            continue
        if isinstance(case, dict):
            lines.append(f"{name + ' perturbed':<24} {case['mean_named_right']:>5.1f}/{case['reference']:<3} mean of "
                         f"{len(case['named_right'])}: {list(case['named_right'].values())}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundled model name, or a model's .json or .safetensors path; default the bundled model")
    parser.add_argument("--phantoms", type=int, default=40)
    parser.add_argument("--thoracic", type=int, default=8, help="extra thoracic-only phantoms (no anchor)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", default=None, help="write the scores as JSON here")
    parser.add_argument("--pictures", default=None, help="folder for pictures of the real-MRI results")
    parser.add_argument("--no-anchors", action="store_true",
                        help="name discs as before anchored decoding (the network's names), for comparison")
    parser.add_argument("--perturb", action="store_true",
                        help="also read each real MRI tilted 4 degrees, 8 %% smaller or larger and with another "
                             "contrast (spineseg.evaluation.real_mris.PERTURBATIONS), and report the counts")
    parser.add_argument("--lean", type=float, default=0.0, metavar="DEGREES",
                        help="also score the held-out phantoms leaning this many degrees to the left and to the right")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(Task.DISCS, args.model, "cpu")
    settings = NO_ANCHORS if args.no_anchors else DecodeSettings()
    report = {
        "model": model.name,
        "anchored_decoding": not args.no_anchors,
        "held_out_phantoms": evaluate_phantoms(model, args.phantoms, args.seed, ANCHORED, settings),
        "thoracic_only_phantoms": evaluate_phantoms(model, args.thoracic, args.seed + 1, ["thoracic"], settings),
        "real_mri_head_to_foot_only": evaluate_real(model, Path(args.pictures) if args.pictures else None, settings),
    }
    for side, degrees in (("left", args.lean), ("right", -args.lean)) if args.lean else ():
        report[f"leaning_{side}_{args.lean:g}_deg"] = evaluate_phantoms(
            model, args.phantoms, args.seed, ANCHORED, settings, Perturbation(f"leaning {side}", tilt_a_deg=degrees))
    if args.perturb:
        report["real_mri_perturbed"] = evaluate_real_perturbed(model, settings)
    text = json.dumps(report, indent=2)
    print(text)
    print(side_by_side(report))
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
