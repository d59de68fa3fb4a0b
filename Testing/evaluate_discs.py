"""Scores of a disc model on held-out phantoms and on the real MRIs in shared/data/real.

Usage (reproduces the figures in the model card and the README):

    python Testing/evaluate_discs.py [--model PATH] [--phantoms 40] [--seed 1000] [--out scores.json]

Held-out phantoms use seeds the training never saw (training: seed 0 stream),
finer in-plane spacing than training (0.5-1.0 mm) and named fields of view
that include an anchor (C1/C2 or the sacrum); thoracic-only fields of view,
which carry no anchor, are scored separately.

Real MRIs (skipped if ../shared/data/real is absent) have no disc-centre
ground truth, so they are scored head to foot only (S coordinate), with the
8 mm threshold:
* PAM50 T2 template: disc labels on the cord centre line (numbers 2..19);
* SCT cervical T2: hand-placed C3, C4, C5 body centres; the C3/C4 and C4/C5
  discs are taken half-way between them;
* SCT thoraco-lumbar T2: one point, the T9/T10 disc (number 17).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from spineseg.discs.metrics import score_discs, summarise
from spineseg.choices import Task
from spineseg.networks.disc_model import DiscModel
from spineseg.discs.pipeline import label_discs
from spineseg.model_store import load_model
from spineseg.pictures import write_discs_picture
from spineseg.io import read_volume
from spineseg.phantoms.mri import FIELDS_OF_VIEW, random_mri_phantom

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
ANCHORED = ["cervical", "cervicothoracic", "thoracolumbar", "lumbar"]


def evaluate_phantoms(model: DiscModel, count: int, seed: int, fields: list[str]) -> dict:
    """Label ``count`` fresh phantoms cycling through ``fields`` and both contrasts."""
    rng = np.random.default_rng(seed)
    scores, seconds = [], []
    for index in range(count):
        field = fields[index % len(fields)]
        contrast = ("T1", "T2")[(index // len(fields)) % 2]
        phantom = random_mri_phantom(rng, contrast=contrast, levels=FIELDS_OF_VIEW[field], fast=False)
        start = time.time()
        result = label_discs(phantom.image, model, device="cpu")
        seconds.append(time.time() - start)
        scores.append(score_discs(result.discs, phantom.disc_points))
    summary = summarise(scores)
    summary["seconds_per_image"] = float(np.median(seconds))
    summary["fields_of_view"] = fields
    return summary


def _si_only(points: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    return {n: np.array([0.0, 0.0, float(p[2])]) for n, p in points.items()}


def _label_points(path: Path) -> dict[int, np.ndarray]:
    labels = read_volume(path)
    points = {}
    for value in np.unique(labels.array):
        if value > 0:
            points[int(value)] = labels.ijk_to_ras(np.argwhere(labels.array == value).mean(axis=0))[0]
    return points


def evaluate_real(model: DiscModel, picture_dir: Path | None) -> dict:
    """Head-to-foot agreement with the annotations of the real MRIs."""
    if not REAL.is_dir():
        return {"skipped": f"{REAL} not found"}
    cases = {}
    pam = REAL / "mr_pam50_template"
    sct = REAL / "mr_sct_t2"
    lumbar = REAL / "mr_t2_lumbar" / "t2_lumbar.nii.gz"
    references = {
        "pam50_t2": (pam / "PAM50_small_t2.nii.gz", lambda: _label_points(pam / "PAM50_small_label_disc.nii.gz")),
        "sct_cervical_t2": (sct / "t2.nii.gz", lambda: _sct_discs(_label_points(sct / "t2_labeled_center_manual.nii.gz"))),
        "sct_thoracolumbar_t2": (lumbar, lambda: {17: read_volume(lumbar).ijk_to_ras(np.array([27, 76, 187]))[0]}),
    }
    for name, (image_path, reference) in references.items():
        if not image_path.exists():
            cases[name] = {"skipped": f"{image_path} not found"}
            continue
        volume = read_volume(image_path)
        start = time.time()
        result = label_discs(volume, model, device="cpu")
        truth = reference()
        predicted = {d.number: np.asarray(d.position_ras) for d in result.discs}
        scores = score_discs(_si_only(predicted), _si_only(truth))
        cases[name] = {**summarise([scores]), "reference_numbers": sorted(truth),
                       "predicted_numbers": result.numbers, "seconds": round(time.time() - start, 2)}
        if picture_dir is not None:
            picture_dir.mkdir(parents=True, exist_ok=True)
            write_discs_picture(result, picture_dir / f"{name}.png", title=f"{name}: {result.numbers}")
    return cases


def _sct_discs(bodies: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Disc n+1 lies between the bodies of vertebrae n and n+1."""
    return {n + 1: (bodies[n] + bodies[n + 1]) / 2 for n in sorted(bodies) if n + 1 in bodies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundled model name, or a model's .json or .safetensors path; default the bundled model")
    parser.add_argument("--phantoms", type=int, default=40)
    parser.add_argument("--thoracic", type=int, default=8, help="extra thoracic-only phantoms (no anchor)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", default=None, help="write the scores as JSON here")
    parser.add_argument("--pictures", default=None, help="folder for pictures of the real-MRI results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(Task.DISCS, args.model, "cpu")
    report = {
        "model": model.name,
        "held_out_phantoms": evaluate_phantoms(model, args.phantoms, args.seed, ANCHORED),
        "thoracic_only_phantoms": evaluate_phantoms(model, args.thoracic, args.seed + 1, ["thoracic"]),
        "real_mri_head_to_foot_only": evaluate_real(model, Path(args.pictures) if args.pictures else None),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
