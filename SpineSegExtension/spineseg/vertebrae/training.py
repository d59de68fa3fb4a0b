"""Training the iterative FCN on phantoms (the loop that builds the bundled model).

Run as ``python -m spineseg.vertebrae.training --out DIR``. The loop follows
the paper: Adam, learning rate 1e-3, batch size 1, the published sampler and
loss; it saves safetensors weights plus a manifest that SpineSeg loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..model_store import ModelEntry, save_model
from ..networks.unet3d import IterativeFCN, IterativeFCNConfig
from ..phantoms.ct import random_ct_phantom
from .loss import IterativeFCNLoss
from .model import VertebraModelSettings
from .sampler import PatchSampler, SamplerConfig, TrainingCase

__all__ = ["VertebraTrainingConfig", "phantom_cases", "train_vertebra_network", "main"]

logger = logging.getLogger(__name__)


@dataclass
class VertebraTrainingConfig:
    """Everything that decides a training run."""

    iterations: int = 3000
    learning_rate: float = 1e-3
    batch_size: int = 1
    phantom_count: int = 40
    seed: int = 0
    threads: int = 2
    model: VertebraModelSettings = field(default_factory=VertebraModelSettings)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)


def phantom_cases(count: int, spacing_mm: float, seed: int) -> list[TrainingCase]:
    """Generate ``count`` random CT phantoms directly on the model's isotropic grid."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in tqdm(range(count), desc="phantoms", leave=False):
        phantom = random_ct_phantom(rng, spacing=(spacing_mm,) * 3)
        cases.append(TrainingCase.from_hounsfield(phantom.image.array, phantom.labels.array, spacing_mm))
    return cases


def _batch(sampler: PatchSampler, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    patches = [sampler.sample() for _ in range(size)]
    as_tensor = lambda values: torch.as_tensor(np.asarray(values), dtype=torch.float32, device=device)  # noqa: E731
    return {
        "inputs": as_tensor([p.inputs for p in patches]),
        "target": as_tensor([p.target for p in patches]),
        "weights": as_tensor([p.weights for p in patches]),
        "complete": as_tensor([p.complete for p in patches]),
        "level": as_tensor([p.position for p in patches]),
        "has_target": as_tensor([p.has_target for p in patches]),
    }


def train_vertebra_network(
    cases: list[TrainingCase],
    config: VertebraTrainingConfig,
    device: torch.device | None = None,
    log_every: int = 50,
    on_checkpoint: Callable[[IterativeFCN, list[dict]], None] | None = None,
    checkpoint_every: int = 500,
) -> tuple[IterativeFCN, list[dict]]:
    """Train a fresh network on ``cases``; returns it and the loss history (one row per ``log_every``).

    ``on_checkpoint(network, history)`` is called every ``checkpoint_every`` iterations, so a
    long run that is stopped still leaves a usable model behind.
    """
    device = device or torch.device("cpu")
    torch.manual_seed(config.seed)
    network = IterativeFCN(config.model.network).to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    # Short CPU runs settle better with a lower rate for the last fifth (the paper kept 1e-3).
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, [int(0.8 * config.iterations)], gamma=0.3)
    sampler = PatchSampler(cases, config.sampler, np.random.default_rng(config.seed + 1))
    loss_function = IterativeFCNLoss()
    history, running = [], []
    bar = tqdm(range(config.iterations), desc="training", unit="it")
    for iteration in bar:
        batch = _batch(sampler, config.batch_size, device)
        output = network(batch["inputs"])
        terms = loss_function(
            output, batch["target"], batch["weights"], batch["complete"], batch["level"], batch["has_target"]
        )
        optimiser.zero_grad(set_to_none=True)
        terms.total.backward()
        optimiser.step()
        schedule.step()
        running.append([float(terms.total.detach()), float(terms.mask), float(terms.completeness), float(terms.level)])
        if (iteration + 1) % log_every == 0 or iteration + 1 == config.iterations:
            mean = np.mean(running, axis=0)
            running = []
            history.append({"iteration": iteration + 1, "loss": mean[0], "mask": mean[1],
                            "completeness": mean[2], "level": mean[3]})
            bar.set_postfix(loss=f"{mean[0]:.3f}", mask=f"{mean[1]:.3f}", level=f"{mean[3]:.2f}")
        if on_checkpoint is not None and (iteration + 1) % checkpoint_every == 0:
            network.eval()
            on_checkpoint(network, history)
            network.train()
    return network.eval(), history


def main(argv: list[str] | None = None) -> int:
    """Train a vertebra model on phantoms and save it as a loadable model."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", required=True, type=Path, help="folder for the model files")
    parser.add_argument("--name", default="vertebrae-ct-phantom-v2")
    parser.add_argument("--iterations", type=int, default=VertebraTrainingConfig.iterations)
    parser.add_argument("--phantoms", type=int, default=VertebraTrainingConfig.phantom_count)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=40)
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    config = VertebraTrainingConfig(
        iterations=args.iterations,
        phantom_count=args.phantoms,
        seed=args.seed,
        threads=args.threads,
        model=VertebraModelSettings(args.spacing, args.patch_size, IterativeFCNConfig(filters=args.filters)),
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.time()
    cases = phantom_cases(config.phantom_count, config.model.spacing_mm, config.seed)

    def save(network: IterativeFCN, history: list[dict]) -> None:
        done = history[-1]["iteration"] if history else 0
        manifest = {
            "task": "vertebrae",
            "version": "1",
            "architecture": "IterativeFCN (Lessmann et al. 2018/2019), 3D U-Net with completeness and level heads",
            "input": config.model.to_dict(),
            "channels": ["CT (HU clipped to [-1000, 3096], divided by 1000; outside scan -2)", "instance memory"],
            "training": {
                "data": f"{config.phantom_count} random CT phantoms (spineseg.phantoms.ct.random_ct_phantom, seed {config.seed})",
                "iterations": done,
                "optimiser": f"Adam lr {config.learning_rate}, x0.3 after 80 %, batch {config.batch_size}",
                "sampler": asdict(config.sampler),
                "hardware": f"{device.type}, {platform.processor() or platform.machine()}, {args.threads} threads",
                "seconds": round(time.time() - started, 1),
                "final_loss": history[-1] if history else None,
            },
        }
        entry: ModelEntry = save_model(network.state_dict(), manifest, args.out, args.name)
        (args.out / f"{args.name}-history.json").write_text(json.dumps(history, indent=1) + "\n")
        logger.info("saved %s after %d iterations", entry.weights_path, done)

    network, history = train_vertebra_network(cases, config, device, on_checkpoint=save)
    save(network, history)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
