"""The iterative vertebra segmentation network (Lessmann et al., MIDL 2018 / MedIA 2019).

A 3D U-Net with a constant number of filters on every resolution level, two input
channels (CT patch, instance memory) and three outputs: the mask of the next
vertebra, the probability that this vertebra is complete in the patch, and a
regression of its anatomical position (C1 = 1 ... sacrum = 25, see
:mod:`spineseg.anatomy`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["IterativeFCNConfig", "IterativeFCN", "ConvBlock", "DownBlock", "UpBlock", "FCNOutput", "VertebraHeads"]


@dataclass(frozen=True)
class IterativeFCNConfig:
    """Architecture settings. The published network is ``filters=64, levels=4``."""

    filters: int = 64
    levels: int = 4
    in_channels: int = 2

    def __post_init__(self) -> None:
        if self.filters < 1:
            raise ValueError(f"filters must be at least 1, got {self.filters}")
        if self.levels < 2:
            raise ValueError(f"levels must be at least 2, got {self.levels}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {self.in_channels}")

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this (one halving per pooling)."""
        return 2 ** (self.levels - 1)

    def to_dict(self) -> dict:
        return asdict(self)


class ConvBlock(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by normalisation and ReLU.

    The paper uses batch norm with batch size 1, which in training normalises
    each patch by its own statistics: that is instance norm. Instance norm keeps
    exactly that behaviour at inference too, where batch norm would switch to
    running averages that fit patches of very different content (empty, outside
    the scan, dense bone) poorly.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.ReLU(inplace=True),
        )


class DownBlock(nn.Sequential):
    """2x max pooling, then a :class:`ConvBlock`."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.MaxPool3d(2), ConvBlock(channels, channels))


class UpBlock(nn.Module):
    """2x transposed convolution, concatenation with the skip connection, then a :class:`ConvBlock`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose3d(channels, channels, 2, stride=2)
        self.convolve = ConvBlock(2 * channels, channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convolve(torch.cat([self.upsample(x), skip], dim=1))


@dataclass
class FCNOutput:
    """Raw network outputs for a batch of N patches.

    mask_logits: N x 1 x D x H x W; completeness_logit: N; position: N (anatomical position, C1 = 1).
    """

    mask_logits: torch.Tensor
    completeness_logit: torch.Tensor
    position: torch.Tensor


class VertebraHeads(nn.Module):
    """Completeness and anatomical position of the vertebra being segmented, from features that still carry content.

    The paper pools the bottleneck. After instance (or batch-size-1 batch)
    normalisation, a plain spatial mean of a feature map is the same for every
    patch, so a head on it can only learn a constant. These heads see three
    summaries instead: the mean of an
    unnormalised convolution of the bottleneck (spatial patterns), the maximum
    of the bottleneck, and the decoder features averaged under the predicted
    mask (the target vertebra itself).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.context = nn.Sequential(nn.Conv3d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.hidden = nn.Sequential(nn.Linear(3 * channels, channels), nn.ReLU(inplace=True))
        self.completeness = nn.Linear(channels, 1)
        # The position head; saved weights name it "level" (heads.level.*), so the attribute keeps that name.
        self.level = nn.Linear(channels, 1)
        # Start the position regression mid-spine (T6 = 13) instead of 0, so early steps fit shapes, not an offset.
        nn.init.constant_(self.level.bias, 13.0)

    def forward(
        self, bottleneck: torch.Tensor, decoded: torch.Tensor, mask_probability: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (completeness logit, position), each of shape N."""
        context = self.context(bottleneck).mean(dim=(2, 3, 4))
        strongest = bottleneck.amax(dim=(2, 3, 4))
        weight = mask_probability.sum(dim=(2, 3, 4)) + 1.0
        target = (decoded * mask_probability).sum(dim=(2, 3, 4)) / weight
        hidden = self.hidden(torch.cat([context, strongest, target], dim=1))
        return self.completeness(hidden).squeeze(1), self.level(hidden).squeeze(1)


class IterativeFCN(nn.Module):
    """3D U-Net with completeness and position heads (see :class:`VertebraHeads`).

    ``forward`` takes N x in_channels x D x H x W with D, H, W multiples of
    ``config.divisor`` and returns logits (no sigmoid) in an :class:`FCNOutput`.
    """

    def __init__(self, config: IterativeFCNConfig | None = None) -> None:
        super().__init__()
        self.config = config or IterativeFCNConfig()
        f = self.config.filters
        self.encoder_input = ConvBlock(self.config.in_channels, f)
        self.down = nn.ModuleList(DownBlock(f) for _ in range(self.config.levels - 1))
        self.up = nn.ModuleList(UpBlock(f) for _ in range(self.config.levels - 1))
        self.mask_head = nn.Conv3d(f, 1, 1)
        self.heads = VertebraHeads(f)

    def forward(self, x: torch.Tensor) -> FCNOutput:
        divisor = self.config.divisor
        if x.ndim != 5 or any(size % divisor for size in x.shape[2:]):
            raise ValueError(f"expected N x C x D x H x W with sizes divisible by {divisor}, got {tuple(x.shape)}")
        skips = [self.encoder_input(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        bottleneck = skips.pop()
        y = bottleneck
        for block, skip in zip(self.up, reversed(skips)):
            y = block(y, skip)
        mask_logits = self.mask_head(y)
        completeness_logit, position = self.heads(bottleneck, y, torch.sigmoid(mask_logits))
        return FCNOutput(mask_logits=mask_logits, completeness_logit=completeness_logit, position=position)
