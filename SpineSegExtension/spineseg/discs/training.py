"""Train the disc heatmap network on generated MRI phantoms (T1w and T2w).

Data: ``random_mri_phantom`` volumes go through the same slab extraction as
inference (:func:`spineseg.discs.slab.extract_slab`, plane found from the
image), and the phantoms' disc centres are projected onto the slab. Slabs are
generated once and cached in memory (optionally on disk, ``.npz``); variety
then comes from on-the-fly augmentation:

* geometry: rotation (+-12 deg), scale (0.8-1.2), shift (+-12 %), and a
  front-back (left-right in the picture) flip, which keeps every label valid;
  head-foot flips are never used because they would reverse the disc order;
* intensity: contrast and brightness change, gamma-like curve, Gaussian noise.

Optimiser: the published RMSprop (lr 2.5e-4) is the default. The bundled CPU
model used Adam (lr 1e-3, cosine decay over the wall-time budget) because it
reached a usable model in far fewer steps, which is what a 20-minute,
one-thread CPU training needs.

Command line: ``python -m spineseg.discs.training --out model.safetensors``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..labels import DISC_NUMBERS
from ..phantoms.anatomy import STANDARD_LEVELS
from ..phantoms.mri import random_mri_phantom
from ..progress import ProgressCallback, no_progress
from .loss import heatmap_loss
from .network import AttentionHourglassNet, HourglassConfig
from .slab import extract_slab
from .targets import render_heatmaps

__all__ = ["SlabSample", "phantom_sample", "make_training_set", "save_training_set", "load_training_set", "augment_batch", "TrainConfig", "train", "save_model"]

log = logging.getLogger(__name__)


@dataclass
class SlabSample:
    """One training image: the slab, its disc points (input pixels, all discs of the spine), truth in RAS."""

    image: np.ndarray
    points: dict[int, np.ndarray]
    slab_to_ras: np.ndarray
    truth_ras: dict[int, np.ndarray]
    contrast: str


def _anchored_levels(rng: np.random.Generator) -> list[int]:
    """A field of view; most include an anchor (C1/C2 at the top or the sacrum at the bottom)."""
    length = int(rng.integers(7, 15))
    draw = rng.random()
    if draw < 0.42:
        return STANDARD_LEVELS[:length]
    if draw < 0.84:
        return STANDARD_LEVELS[-length:]
    start = int(rng.integers(0, len(STANDARD_LEVELS) - length + 1))
    return STANDARD_LEVELS[start : start + length]


def phantom_sample(rng: np.random.Generator, size: int = 256) -> SlabSample:
    """Generate one random phantom and cut its slab exactly as inference does."""
    phantom = random_mri_phantom(rng, levels=_anchored_levels(rng))
    slab = extract_slab(phantom.image, size=size)
    points = {disc.number: slab.ras_to_pixel(disc.centre)[0] for disc in phantom.layout.discs}
    return SlabSample(slab.image, points, slab.slab_to_ras, dict(phantom.disc_points), phantom.contrast)


def make_training_set(count: int, seed: int, size: int = 256, progress: ProgressCallback = no_progress,
                      show_bar: bool = True) -> list[SlabSample]:
    """Generate ``count`` phantom slabs (about 1 s each on one CPU thread)."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in tqdm(range(count), desc="phantoms", disable=not show_bar):
        samples.append(phantom_sample(rng, size))
        progress((index + 1) / count, f"phantom {index + 1}/{count}")
    return samples


def save_training_set(samples: list[SlabSample], path: str | Path) -> None:
    """Cache slabs and points in one ``.npz`` (arrays only, loads without pickle)."""
    points = np.full((len(samples), len(DISC_NUMBERS), 2), np.nan, dtype=np.float32)
    for index, sample in enumerate(samples):
        for number, point in sample.points.items():
            points[index, number - DISC_NUMBERS[0]] = point
    np.savez_compressed(path, images=np.stack([s.image for s in samples]).astype(np.float16), points=points,
                        slab_to_ras=np.stack([s.slab_to_ras for s in samples]),
                        contrasts=np.array([s.contrast for s in samples]))


def load_training_set(path: str | Path) -> list[SlabSample]:
    """Inverse of :func:`save_training_set` (RAS truth is not kept)."""
    with np.load(path, allow_pickle=False) as data:
        samples = []
        for image, points, matrix, contrast in zip(data["images"], data["points"], data["slab_to_ras"], data["contrasts"]):
            present = {DISC_NUMBERS[c]: points[c].astype(float) for c in range(len(DISC_NUMBERS)) if np.isfinite(points[c, 0])}
            samples.append(SlabSample(image.astype(np.float32), present, matrix, {}, str(contrast)))
    return samples


def augment_batch(
    samples: list[SlabSample], rng: np.random.Generator, stride: int = 4, sigma: float = 1.25, strength: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augmented images (N,1,S,S), target heatmaps (N,C,S/stride,S/stride) and visibility (N,C)."""
    size = samples[0].image.shape[0]
    images = torch.from_numpy(np.stack([s.image for s in samples])[:, None].astype(np.float32))
    thetas, heatmaps, visibilities = [], [], []
    for sample in samples:
        angle = np.deg2rad(rng.uniform(-12, 12) * strength)
        scale = math.exp(rng.uniform(math.log(0.8), math.log(1.2)) * strength)
        shift = rng.uniform(-0.12, 0.12, 2) * strength
        flip = rng.random() < 0.5 * strength
        # Output-normalised (x=col, y=row) -> input-normalised coordinates.
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) / scale
        if flip:
            rotation = rotation @ np.diag([-1.0, 1.0])
        theta = np.concatenate([rotation, shift[:, None]], axis=1)
        thetas.append(theta)
        inverse = np.linalg.inv(rotation)
        moved = {}
        for number, (row, col) in sample.points.items():
            u = np.array([(2 * col + 1) / size - 1, (2 * row + 1) / size - 1])
            v = inverse @ (u - shift)
            moved[number] = np.array([((v[1] + 1) * size - 1) / 2, ((v[0] + 1) * size - 1) / 2])
        heatmap, visibility = render_heatmaps(moved, size, stride, sigma)
        heatmaps.append(heatmap)
        visibilities.append(visibility)
    grid = F.affine_grid(torch.tensor(np.stack(thetas), dtype=torch.float32), list(images.shape), align_corners=False)
    background = images.amin(dim=(2, 3), keepdim=True)
    warped = F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = warped + background
    n = len(samples)
    contrast = torch.from_numpy(np.exp(rng.normal(0, 0.2 * strength, (n, 1, 1, 1))).astype(np.float32))
    offset = torch.from_numpy(rng.normal(0, 0.2 * strength, (n, 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.uniform(0, 0.25 * strength, (n, 1, 1, 1)).astype(np.float32))
    warped = warped * contrast + offset + noise * torch.randn_like(warped)
    # Gamma-like curve applied around the mean keeps the z-scored range.
    gamma = torch.from_numpy(rng.uniform(-0.15, 0.15, (n, 1, 1, 1)).astype(np.float32) * strength)
    warped = warped + gamma * (warped**2 - 1.0)
    return warped, torch.from_numpy(np.stack(heatmaps)), torch.from_numpy(np.stack(visibilities))


@dataclass
class TrainConfig:
    """Training settings; the defaults are the published ones where there are any."""

    features: int = 48
    stacks: int = 2
    depth: int = 4
    input_size: int = 256
    batch_size: int = 6
    steps: int = 100000
    minutes: float | None = None  # wall-time budget; the cosine schedule follows it when set
    optimizer: str = "rmsprop"  # "rmsprop" (published, lr 2.5e-4) or "adam"
    lr: float = 2.5e-4
    phantoms: int = 200
    seed: int = 0
    sigma: float = 1.25
    threads: int = 1
    foreground_weight: float = 0.0  # 0 = published plain MSE
    cache: str | None = None  # .npz of generated slabs, reused when present
    init: str | None = None  # safetensors weights to continue from
    previous_steps: int = 0  # steps already done by ``init`` (recorded in the manifest)


def _schedule(progress_fraction: float, lr: float) -> float:
    return 1e-2 * lr + 0.5 * (lr - 1e-2 * lr) * (1 + math.cos(math.pi * min(progress_fraction, 1.0)))


def train(
    config: TrainConfig,
    samples: list[SlabSample] | None = None,
    out: str | Path | None = None,
    progress: ProgressCallback = no_progress,
    show_bar: bool = True,
) -> tuple[AttentionHourglassNet, list[float]]:
    """Train a network; return it (eval mode) and the loss of every step.

    Saves ``out`` (safetensors plus a ``.json`` manifest beside it) every 200
    steps and at the end, when given.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    start = time.time()
    if samples is None and config.cache and Path(config.cache).exists():
        samples = load_training_set(config.cache)
        log.info("loaded %d cached slabs from %s", len(samples), config.cache)
    if samples is None:
        samples = make_training_set(config.phantoms, config.seed, config.input_size, show_bar=show_bar)
        if config.cache:
            save_training_set(samples, config.cache)
    generation_s = time.time() - start
    net_config = HourglassConfig(out_channels=len(DISC_NUMBERS), features=config.features,
                                 stacks=config.stacks, depth=config.depth)
    model = AttentionHourglassNet(net_config)
    if config.init:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(config.init)))
        log.info("starting from the weights in %s", config.init)
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    elif config.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(model.parameters(), lr=config.lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {config.optimizer!r}")
    losses: list[float] = []
    train_start = time.time()
    bar = tqdm(total=config.steps, desc="training", disable=not show_bar)
    model.train()
    step = 0
    for step in range(1, config.steps + 1):
        elapsed = time.time() - train_start
        fraction = elapsed / (config.minutes * 60) if config.minutes else step / config.steps
        if config.minutes and fraction >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = _schedule(fraction, config.lr)
        batch = [samples[i] for i in rng.integers(0, len(samples), config.batch_size)]
        images, targets, visibility = augment_batch(batch, rng, sigma=config.sigma)
        loss = heatmap_loss(model(images), targets, visibility, config.foreground_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.5f}")
        progress(min(fraction, 1.0), f"step {step} loss {losses[-1]:.5f}")
        if out is not None and step % 200 == 0:
            save_model(model, out, config, steps=config.previous_steps + step, seconds=time.time() - start, generation_s=generation_s)
    bar.close()
    model.eval()
    if out is not None:
        save_model(model, out, config, steps=config.previous_steps + len(losses), seconds=time.time() - start, generation_s=generation_s)
    return model, losses


def save_model(model: AttentionHourglassNet, out: str | Path, config: TrainConfig, *, steps: int,
               seconds: float, generation_s: float = 0.0, extra: dict | None = None) -> dict:
    """Write weights (safetensors) and a manifest entry (same name, ``.json``); return the manifest."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    temporary = out.with_name(out.name + ".partial")
    save_file(state, str(temporary))
    temporary.replace(out)
    out.chmod(0o644)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    manifest_path = out.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update({
        "name": out.stem,
        "version": manifest.get("version", "1.0.0"),
        "task": "discs",
        "file": out.name,
        "sha256": digest,
        "architecture": {"type": "AttentionHourglassNet", **model.config.to_dict()},
        "input_size": [config.input_size, config.input_size],
        "output_stride": 4,
        "heatmap_sigma_px": config.sigma,
        "channels": {"input": ["mid-sagittal slab, 6 mm mean, z-scored"],
                     "output": [f"disc {n}" for n in DISC_NUMBERS]},
        "slab_thickness_mm": 6.0,
        "training": {
            "data": f"{config.phantoms} generated MRI phantoms (T1w and T2w, spineseg.phantoms.mri.random_mri_phantom, seed {config.seed}), augmented on the fly",
            "steps": steps,
            "batch_size": config.batch_size,
            "optimizer": f"{config.optimizer} lr {config.lr} cosine",
            "loss": f"visibility-weighted MSE per stack, foreground weight {config.foreground_weight}",
            "hardware": f"CPU, {config.threads} thread(s), {platform.processor() or platform.machine()}",
            "seconds": round(seconds, 1),
            "phantom_generation_seconds": round(generation_s, 1),
        },
    })
    if extra:
        manifest.update(extra)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command line: train and save a disc model."""
    parser = argparse.ArgumentParser(description="Train the SpineSeg disc network on MRI phantoms.")
    parser.add_argument("--out", required=True, help="weights file (.safetensors); a .json manifest is written beside it")
    parser.add_argument("--features", type=int, default=48)
    parser.add_argument("--phantoms", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--minutes", type=float, default=None, help="stop after this much training wall time")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--optimizer", choices=["rmsprop", "adam"], default="rmsprop")
    parser.add_argument("--lr", type=float, default=None, help="default 2.5e-4 (rmsprop) or 1e-3 (adam)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", default=None, help="continue from these safetensors weights")
    parser.add_argument("--previous-steps", type=int, default=0, help="steps already done by --init")
    parser.add_argument("--cache", default=None, help=".npz cache of generated slabs (written if missing)")
    parser.add_argument("--foreground-weight", type=float, default=0.0, help="extra loss weight on disc pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    lr = args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else 2.5e-4)
    config = TrainConfig(features=args.features, phantoms=args.phantoms, steps=args.steps, minutes=args.minutes,
                         batch_size=args.batch_size, optimizer=args.optimizer, lr=lr, seed=args.seed,
                         threads=args.threads, foreground_weight=args.foreground_weight,
                         cache=args.cache, init=args.init, previous_steps=args.previous_steps)
    _, losses = train(config, out=args.out)
    log.info("trained %d steps, final loss %.5f", len(losses), float(np.mean(losses[-50:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
