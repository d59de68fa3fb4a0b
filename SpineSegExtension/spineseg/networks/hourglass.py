"""Stacked hourglass network with multi-level attention (after Azad et al., 2021).

Layout (H x W input, F features):

* stem: 7x7 conv stride 2, residual, 2x2 max-pool, two residuals -> F x H/4 x W/4;
* ``stacks`` hourglasses of ``depth`` levels each (pool, residual, recurse,
  upsample, add a skip residual), each followed by a residual, a 1x1 conv and
  a 1x1 heatmap head; between stacks the features and the heatmaps are mapped
  back and added to the running features (intermediate supervision);
* multi-level attention: the features of all stacks are concatenated and
  turned by two 1x1 convs into one sigmoid map that multiplies the last
  stack's features before its heatmap head.

``forward`` returns a list with one (N, channels, H/4, W/4) heatmap per stack;
the last is the prediction. H and W must be divisible by ``4 * 2**depth``
(64 for depth 4), so 256 x 256 works.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["HourglassConfig", "Residual", "Hourglass", "AttentionHourglassNet"]


@dataclass(frozen=True)
class HourglassConfig:
    """Architecture settings, stored in the model manifest."""

    in_channels: int = 1
    out_channels: int = 24
    features: int = 256
    stacks: int = 2
    depth: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return 4 * 2**self.depth


class Residual(nn.Module):
    """Bottleneck residual block: BN-ReLU-1x1 (half) -> 3x3 -> 1x1, plus a (projected) skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        middle = max(out_channels // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, middle, 1),
            nn.BatchNorm2d(middle), nn.ReLU(inplace=True), nn.Conv2d(middle, middle, 3, padding=1),
            nn.BatchNorm2d(middle), nn.ReLU(inplace=True), nn.Conv2d(middle, out_channels, 1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass level: a skip branch at this scale and a pooled branch that recurses."""

    def __init__(self, depth: int, features: int) -> None:
        super().__init__()
        self.skip = Residual(features, features)
        self.down = Residual(features, features)
        self.inner = Hourglass(depth - 1, features) if depth > 1 else Residual(features, features)
        self.up = Residual(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


class _ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class AttentionHourglassNet(nn.Module):
    """The disc heatmap network; see the module docstring for the layout."""

    def __init__(self, config: HourglassConfig = HourglassConfig()) -> None:
        super().__init__()
        if config.stacks < 1 or config.depth < 1 or config.features < 4:
            raise ValueError(f"stacks, depth must be >= 1 and features >= 4, got {config}")
        self.config = config
        f = config.features
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, f // 2, 7, stride=2, padding=3), nn.BatchNorm2d(f // 2), nn.ReLU(inplace=True),
            Residual(f // 2, f), nn.MaxPool2d(2), Residual(f, f), Residual(f, f),
        )
        self.hourglasses = nn.ModuleList(Hourglass(config.depth, f) for _ in range(config.stacks))
        self.post = nn.ModuleList(nn.Sequential(Residual(f, f), _ConvBNReLU(f, f)) for _ in range(config.stacks))
        self.heads = nn.ModuleList(nn.Conv2d(f, config.out_channels, 1) for _ in range(config.stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(config.stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(config.out_channels, f, 1) for _ in range(config.stacks - 1))
        self.attention = nn.Sequential(_ConvBNReLU(f * config.stacks, f), nn.Conv2d(f, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        divisor = self.config.divisor
        if x.shape[-1] % divisor or x.shape[-2] % divisor:
            raise ValueError(f"input height and width must be multiples of {divisor}, got {tuple(x.shape[-2:])}")
        x = self.stem(x)
        outputs: list[torch.Tensor] = []
        stack_features: list[torch.Tensor] = []
        for index in range(self.config.stacks):
            features = self.post[index](self.hourglasses[index](x))
            stack_features.append(features)
            if index < self.config.stacks - 1:
                heatmap = self.heads[index](features)
                outputs.append(heatmap)
                x = x + self.merge_features[index](features) + self.merge_heatmaps[index](heatmap)
        attention = self.attention(torch.cat(stack_features, dim=1))
        outputs.append(self.heads[-1](stack_features[-1] * attention))
        return outputs
