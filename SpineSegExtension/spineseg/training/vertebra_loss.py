"""Training loss of the iterative FCN, as published.

Mask: a weighted false-positive/false-negative term plus binary cross-entropy,
with weights ``w = 1 + 8 exp(-d^2 / 36)`` that stress voxels near the target
vertebra's surface (``d`` in mm). Completeness: cross-entropy. Position: L1 plus
a small squared error, only where the patch has a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..networks.unet3d import FCNOutput

__all__ = ["boundary_weights", "IterativeFCNLoss", "LossTerms"]


def boundary_weights(target: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Weights ``1 + 8 exp(-d^2/36)`` with ``d`` the distance in mm to the target's boundary.

    An empty target gives weight 1 everywhere.
    """
    target = target.astype(bool)
    if not target.any():
        return np.ones(target.shape, dtype=np.float32)
    outside = ndimage.distance_transform_edt(~target)
    inside = ndimage.distance_transform_edt(target)
    distance = np.where(target, inside, outside) * spacing_mm
    return (1.0 + 8.0 * np.exp(-(distance**2) / 36.0)).astype(np.float32)


@dataclass
class LossTerms:
    total: torch.Tensor
    mask: torch.Tensor
    completeness: torch.Tensor
    position: torch.Tensor


class IterativeFCNLoss:
    """Combined loss; ``position_weight`` scales the position term (positions are 1..25)."""

    def __init__(self, fp_fn_weight: float = 1.0, position_weight: float = 0.2) -> None:
        self.fp_fn_weight = fp_fn_weight
        self.position_weight = position_weight

    def __call__(
        self,
        output: FCNOutput,
        target: torch.Tensor,
        weights: torch.Tensor,
        complete: torch.Tensor,
        position: torch.Tensor,
        has_target: torch.Tensor,
        level_known: torch.Tensor | None = None,
    ) -> LossTerms:
        """All tensors are batched: target/weights N x 1 x D x H x W; others N. ``level_known`` (N, 0 or 1)
        leaves the position term out for patches whose level should not teach the level head."""
        probability = torch.sigmoid(output.mask_logits)
        false_pos = (weights * probability * (1 - target)).sum(dim=(1, 2, 3, 4))
        false_neg = (weights * (1 - probability) * target).sum(dim=(1, 2, 3, 4))
        normaliser = (weights * target).sum(dim=(1, 2, 3, 4)) + (weights * probability).sum(dim=(1, 2, 3, 4)) + 1.0
        fp_fn = ((false_pos + false_neg) / normaliser).mean()
        bce = (F.binary_cross_entropy_with_logits(output.mask_logits, target, reduction="none") * weights).mean()
        mask_loss = self.fp_fn_weight * fp_fn + bce

        mask = has_target.float()
        count = mask.sum().clamp(min=1.0)
        completeness = (
            F.binary_cross_entropy_with_logits(output.completeness_logit, complete, reduction="none") * mask
        ).sum() / count
        position_mask = mask if level_known is None else mask * level_known.float()
        error = output.position - position
        position_loss = ((error.abs() + 0.1 * error**2) * position_mask).sum() / position_mask.sum().clamp(min=1.0)
        total = mask_loss + completeness + self.position_weight * position_loss
        return LossTerms(total, mask_loss.detach(), completeness.detach(), position_loss.detach())
