"""Heatmap loss: mean squared error per stack, weighted by channel visibility."""

from __future__ import annotations

import torch

__all__ = ["heatmap_loss"]


def heatmap_loss(
    outputs: list[torch.Tensor], targets: torch.Tensor, visibility: torch.Tensor, foreground_weight: float = 0.0
) -> torch.Tensor:
    """Sum over stacks of the visibility-weighted pixel MSE.

    Args:
        outputs: per-stack heatmaps, each (N, C, h, w).
        targets: (N, C, h, w) Gaussian targets.
        visibility: (N, C) weights, 0 for channels whose answer is unknown.
        foreground_weight: extra pixel weight ``1 + foreground_weight * target``;
            0 gives the published plain MSE. A few units speed up short
            trainings, where the all-zero answer otherwise dominates for long.

    The per-channel MSE is averaged over the channels with weight > 0, so the
    loss scale does not depend on how many discs an image shows.
    """
    if not outputs:
        raise ValueError("outputs must hold at least one stack's heatmaps")
    weights = visibility.to(targets.dtype)
    total = torch.zeros((), dtype=targets.dtype, device=targets.device)
    for heatmaps in outputs:
        if heatmaps.shape != targets.shape:
            raise ValueError(f"outputs shape {tuple(heatmaps.shape)} differs from targets {tuple(targets.shape)}")
        squared = (heatmaps - targets) ** 2
        if foreground_weight:
            squared = squared * (1.0 + foreground_weight * targets)
        per_channel = squared.mean(dim=(2, 3))
        total = total + (per_channel * weights).sum() / weights.sum().clamp(min=1.0)
    return total
