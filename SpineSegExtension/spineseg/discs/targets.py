"""Training targets: one Gaussian heatmap per disc number, plus visibility flags.

Channel c holds disc number c + 2 (2 = C1/C2 ... 25 = L5/S1), so channels run
head to foot. Heatmaps live on the network's output grid (the input divided by
``stride``); a point at input pixel p sits at output pixel (p + 0.5) / stride - 0.5.

Visibility (the loss weight of a channel) is 1 where the target is known: the
disc is inside the image (Gaussian) or clearly outside it or not part of the
spine shown (all-zero target). Discs just outside the border get 0: the
network cannot know whether to fire there.
"""

from __future__ import annotations

import numpy as np

from ..labels import DISC_NUMBERS

__all__ = ["N_CHANNELS", "channel_of", "number_of", "render_heatmaps", "input_to_output", "output_to_input"]

N_CHANNELS = len(DISC_NUMBERS)


def channel_of(number: int) -> int:
    """Heatmap channel of a Spinal Cord Toolbox disc number."""
    if number not in DISC_NUMBERS:
        raise ValueError(f"number must be a disc number 2..25, got {number}")
    return number - DISC_NUMBERS[0]


def number_of(channel: int) -> int:
    """Disc number of a heatmap channel."""
    if not 0 <= channel < N_CHANNELS:
        raise ValueError(f"channel must be 0..{N_CHANNELS - 1}, got {channel}")
    return DISC_NUMBERS[channel]


def input_to_output(points: np.ndarray, stride: int) -> np.ndarray:
    """Input-pixel coordinates -> output-grid coordinates (pixel centres aligned)."""
    return (np.asarray(points, dtype=float) + 0.5) / stride - 0.5


def output_to_input(points: np.ndarray, stride: int) -> np.ndarray:
    """Output-grid coordinates -> input-pixel coordinates."""
    return (np.asarray(points, dtype=float) + 0.5) * stride - 0.5


def render_heatmaps(
    points: dict[int, np.ndarray],
    input_size: int,
    stride: int = 4,
    sigma: float = 1.25,
    border: float = 6.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian targets and visibility flags for one image.

    Args:
        points: disc number -> (row, column) in input pixels, for every disc of
            the imaged spine, including those outside the image.
        input_size: input height (= width) in pixels.
        stride: input pixels per output pixel.
        sigma: Gaussian width in output pixels.
        border: input pixels outside the image within which a disc's
            visibility is unknown (weight 0).

    Returns:
        heatmaps (N_CHANNELS, size, size) float32 with peak 1, visibility (N_CHANNELS,) float32.
    """
    if input_size % stride:
        raise ValueError(f"input_size {input_size} must be a multiple of stride {stride}")
    size = input_size // stride
    heatmaps = np.zeros((N_CHANNELS, size, size), dtype=np.float32)
    visibility = np.ones(N_CHANNELS, dtype=np.float32)
    grid = np.arange(size, dtype=np.float32)
    for number, point in points.items():
        row, col = (float(x) for x in point)
        inside = 0 <= row <= input_size - 1 and 0 <= col <= input_size - 1
        near = -border <= row <= input_size - 1 + border and -border <= col <= input_size - 1 + border
        channel = channel_of(number)
        if inside:
            r, c = input_to_output(np.array([row, col]), stride)
            heatmaps[channel] = np.exp(-((grid[:, None] - r) ** 2 + (grid[None, :] - c) ** 2) / (2 * sigma**2))
            if min(row, col, input_size - 1 - row, input_size - 1 - col) < border:
                visibility[channel] = 0.0  # cut by the border: half a disc, unknown answer
        elif near:
            visibility[channel] = 0.0
    return heatmaps, visibility
