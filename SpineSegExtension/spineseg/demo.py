"""The demo behind ``spineseg demo``, and the score tables the CLI prints.

Both tasks run on phantoms held out from training (seed 1000 by default) with
the bundled models, through the same jobs as real inputs, and the results are
scored against the phantoms' own truth.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .choices import DeviceChoice
from .errors import InputError
from .io import write_volume
from .publish import output_directory
from .jobs import run_discs, run_vertebrae
from .labels import disc_name, vertebra_name
from .progress import ProgressCallback, no_progress

__all__ = ["PHANTOM_NAMES", "write_ct_phantom", "print_vertebra_scores", "run_demo"]

PHANTOM_NAMES = ("ct.nii.gz", "vertebrae-reference.nii.gz")


def write_ct_phantom(output_dir: str | os.PathLike, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                     orientation: str = "LPS", seed: int = 1000, overwrite: bool = False) -> dict[str, Path]:
    """Write a CT phantom and its reference label map; returns their paths by file name."""
    from .phantoms.ct import make_ct_phantom

    phantom = make_ct_phantom(spacing=spacing, orientation=orientation, seed=seed)
    with output_directory(output_dir, list(PHANTOM_NAMES), overwrite) as staging:
        write_volume(phantom.image, staging / PHANTOM_NAMES[0])
        write_volume(phantom.labels, staging / PHANTOM_NAMES[1])
    return {name: Path(output_dir) / name for name in PHANTOM_NAMES}


def print_vertebra_scores(scores) -> None:
    """One line per reference vertebra (Dice, surface distance, named right) and a summary line."""
    print(f"{'vertebra':>9} {'Dice':>6} {'ASSD mm':>8} {'named':>6}")
    for score in scores.vertebrae:
        print(
            f"{vertebra_name(score.level):>9} {score.dice:6.3f} {score.assd_mm:8.2f} "
            f"{'yes' if score.identified else 'NO':>6}"
        )
    summary = scores.summary()
    print(
        f"mean Dice {summary['mean_dice']:.3f}, mean ASSD {summary['mean_assd_mm']:.2f} mm, "
        f"identification {100 * summary['identification_rate']:.0f} %, missed {summary['missed']}, "
        f"false positives {summary['false_positives']}"
    )


def run_demo(output_dir: str | os.PathLike, seed: int = 1000, device: DeviceChoice | str = DeviceChoice.AUTO,
             overwrite: bool = False, progress: ProgressCallback = no_progress) -> dict[str, Path]:
    """Phantom CT -> vertebrae (Dice against the truth); phantom MRI -> discs (distances to the truth)."""
    from .io import read_volume
    from .metrics import score_vertebrae
    from .volume import VolumeKind

    out = Path(output_dir)
    started = time.time()
    print(f"1/2 vertebrae: generating a CT phantom (seed {seed}, held out from training) in {out / 'phantom'}")
    files = write_ct_phantom(out / "phantom", seed=seed, overwrite=overwrite)
    reference = read_volume(files["vertebrae-reference.nii.gz"], VolumeKind.LABEL)
    job = run_vertebrae(files["ct.nii.gz"], out / "vertebrae", device=device, overwrite=overwrite,
                        reference=reference, progress=progress)
    print_vertebra_scores(score_vertebrae(job.result.label_map.array, reference.array, job.image.spacing))
    print(f"vertebra outputs in {out / 'vertebrae'} ({time.time() - started:.0f} s)")
    print("2/2 discs: generating a T2 MRI phantom and labelling its discs")
    return {**job.outputs, **_disc_demo(out, seed, device, overwrite, progress)}


def _disc_demo(out: Path, seed: int, device: DeviceChoice | str, overwrite: bool,
               progress: ProgressCallback) -> dict[str, Path]:
    """Phantom MRI -> discs, then the distance of each found disc to the phantom's true disc centre."""
    from .evaluation.disc_metrics import score_discs
    from .phantoms.mri import make_mri_phantom

    phantom = make_mri_phantom(contrast="T2", seed=seed)
    image_path = out / "phantom" / "mri_t2.nii.gz"
    if image_path.exists() and not overwrite:
        raise InputError(f"{image_path} exists; pass --overwrite")
    write_volume(phantom.image, image_path)
    job = run_discs(image_path, out / "discs", device=device, overwrite=overwrite, progress=progress)
    found = {disc.number: np.asarray(disc.position_ras) for disc in job.result.discs}
    print(f"{'disc':>7} {'distance mm':>12}")
    for disc in job.result.discs:
        truth = phantom.disc_points.get(disc.number)
        distance = "no such disc" if truth is None else f"{np.linalg.norm(found[disc.number] - truth):.2f}"
        print(f"{disc.name:>7} {distance:>12}")
    scores = score_discs(found, phantom.disc_points)
    missed = [disc_name(n) for n in phantom.disc_points if n not in found]
    median = float(np.median(scores.distances_mm)) if scores.distances_mm else float("nan")
    print(
        f"median distance {median:.2f} mm, false negatives {scores.false_negatives}/{scores.n_reference}, "
        f"false positives {scores.false_positives}, right labels {100 * scores.label_accuracy:.0f} %"
        + (f"; missed {', '.join(missed)}" if missed else "")
    )
    return job.outputs
