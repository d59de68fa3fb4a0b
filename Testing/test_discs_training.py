"""A few training steps lower the heatmap loss; targets and the network agree on shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from spineseg.training.disc_loss import heatmap_loss
from spineseg.networks.hourglass import AttentionHourglassNet, HourglassConfig
from spineseg.discs.targets import N_CHANNELS, channel_of, output_to_input, render_heatmaps
from spineseg.training.tasks.discs import Acquisition, SlabSample, acquisition_effects, augment_batch, phantom_sample


def test_targets_and_visibility():
    heatmaps, visibility = render_heatmaps({20: np.array([100.0, 120.0]), 21: np.array([-3.0, 120.0]),
                                            22: np.array([-80.0, 120.0])}, 256)
    assert heatmaps.shape == (N_CHANNELS, 64, 64)
    assert heatmaps[18].max() == pytest.approx(1.0, abs=0.1) and visibility[18] == 1
    assert visibility[19] == 0  # just outside the border: unknown
    assert visibility[20] == 1 and heatmaps[20].max() == 0  # far outside: known absent


def test_network_checks_input_size():
    network = AttentionHourglassNet(HourglassConfig(features=8))
    with pytest.raises(ValueError, match="multiples of 64"):
        network(torch.zeros(1, 1, 100, 100))


def test_few_steps_lower_the_loss():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: more threads only add contention
    try:
        _train_a_few_steps()
    finally:
        torch.set_num_threads(threads)


def _train_a_few_steps():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    samples = [phantom_sample(rng, size=128) for _ in range(2)]
    images, targets, visibility = augment_batch(samples, rng, strength=0.5)
    network = AttentionHourglassNet(HourglassConfig(features=8))
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = heatmap_loss(network(images), targets, visibility, foreground_weight=4.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2]), losses


# Alignment of images and targets under augmentation. Geometry moves image and points together; the acquisition
# effects change intensities only (ghosting adds faint shifted copies, but the anatomy stays put), so they are
# judged against the same sample without the effect, never by looking for the nearest bright spot.

SIZE, STRIDE = 256, 4
DOT_ROWS = {20: 40.0, 21: 75.0, 22: 110.0, 23: 145.0, 24: 180.0, 25: 215.0}
DOT_POINTS = {n: np.array([r, 100.0 + 0.2 * r]) for n, r in DOT_ROWS.items()}


def _dots() -> np.ndarray:
    """A picture with a bright Gaussian dot (sigma 2 px) at each disc point."""
    grid_r, grid_c = np.mgrid[:SIZE, :SIZE]
    return sum(np.exp(-((grid_r - p[0]) ** 2 + (grid_c - p[1]) ** 2) / (2 * 2.0**2))
               for p in DOT_POINTS.values()).astype(np.float32)


def _target_peak(heatmap: np.ndarray) -> np.ndarray:
    """Sub-pixel peak of one target heatmap, in input pixels (centroid of its top)."""
    weights = np.where(heatmap > 0.3 * heatmap.max(), heatmap, 0.0)
    grid = np.mgrid[: heatmap.shape[0], : heatmap.shape[1]]
    return output_to_input((grid * weights).sum(axis=(1, 2)) / weights.sum(), STRIDE)


@pytest.mark.parametrize("seed", range(4))
def test_geometry_moves_the_image_and_the_targets_together(seed):
    sample = SlabSample(_dots(), DOT_POINTS, np.eye(3), {}, "T2")
    images, targets, _ = augment_batch([sample], np.random.default_rng(seed), STRIDE, 1.25, effects=())
    picture = ndimage.gaussian_filter(images[0, 0].numpy(), 1.5)  # the dots' centres, less the added noise
    found = 0
    for number in DOT_POINTS:
        heatmap = targets[0, channel_of(number)].numpy()
        if heatmap.max() < 0.8:  # the point left the picture or sits on its edge
            continue
        peak = _target_peak(heatmap)
        if np.any(peak < 8) or np.any(peak > SIZE - 9):
            continue
        r, c = (int(round(x)) for x in peak)
        window = picture[r - 8 : r + 9, c - 8 : c + 9]
        dot = np.array(np.unravel_index(window.argmax(), window.shape)) + [r - 8, c - 8]
        assert np.hypot(*(dot - peak)) <= 1.5, (seed, number, dot, peak)  # whole-pixel argmax: <= 0.71 off
        found += 1
    assert found >= 4


@pytest.mark.parametrize("effect", [e for e in Acquisition if e is not Acquisition.CROP])
def test_acquisition_effects_leave_the_targets_and_the_anatomy_in_place(effect):
    sample = SlabSample(_dots(), DOT_POINTS, np.eye(3), {}, "T2")
    for seed in range(4):
        _, clean_targets, clean_visibility = augment_batch([sample], np.random.default_rng(seed), STRIDE, 1.25,
                                                           effects=())
        _, targets, visibility = augment_batch([sample], np.random.default_rng(seed), STRIDE, 1.25,
                                               effects=(effect,), effect_probability=1.0)
        assert torch.equal(targets, clean_targets) and torch.equal(visibility, clean_visibility), (effect, seed)
        # The effect on its own: the picture changes, but it lines up best with the clean one where it is.
        clean = _dots()
        changed = acquisition_effects(clean, np.random.default_rng(seed), (effect,), probability=1.0)
        assert not np.allclose(changed, (clean - clean.mean()) / clean.std(), atol=1e-3), (effect, seed)
        spectrum = np.fft.fft2(changed - changed.mean()) * np.conj(np.fft.fft2(clean - clean.mean()))
        correlation = np.real(np.fft.ifft2(spectrum))
        assert np.unravel_index(correlation.argmax(), correlation.shape) == (0, 0), (effect, seed)
        smooth = ndimage.gaussian_filter(changed, 2.0)
        for number, point in DOT_POINTS.items():
            r, c = (int(round(x)) for x in point)
            window = smooth[r - 6 : r + 7, c - 6 : c + 7]
            dot = np.array(np.unravel_index(window.argmax(), window.shape)) + [r - 6, c - 6]
            assert np.hypot(*(dot - point)) <= 1.5, (effect, seed, number, dot)


def test_crop_keeps_the_targets_of_the_discs_it_keeps_and_drops_the_others():
    sample = SlabSample(_dots(), DOT_POINTS, np.eye(3), {}, "T2")
    cropped_some = False
    for seed in range(8):
        images, clean_targets, _ = augment_batch([sample], np.random.default_rng(seed), STRIDE, 1.25, effects=())
        cropped, targets, _ = augment_batch([sample], np.random.default_rng(seed), STRIDE, 1.25,
                                            effects=(Acquisition.CROP,), effect_probability=1.0)
        kept = [n for n in DOT_POINTS if targets[0, channel_of(n)].max() > 0.5]
        assert len(kept) >= 4, seed
        for number in kept:  # a kept disc's target is the uncropped one, and its picture is still there
            assert torch.equal(targets[0, channel_of(number)], clean_targets[0, channel_of(number)])
            r, c = (int(round(x)) for x in _target_peak(targets[0, channel_of(number)].numpy()))
            assert cropped[0, 0, r, c] != 0.0
        dropped = [n for n in DOT_POINTS if n not in kept and clean_targets[0, channel_of(n)].max() > 0.5]
        for number in dropped:  # cut away: no target and nothing in the picture
            r, c = (int(round(x)) for x in _target_peak(clean_targets[0, channel_of(number)].numpy()))
            row = cropped[0, 0, r].numpy()
            assert abs(row[c] - np.median(row)) < 1.0, (seed, number)  # the dot's peak is about 10 here
        cropped_some |= bool(dropped)
    assert cropped_some


def test_a_batch_is_fixed_by_the_rng_state():
    sample = SlabSample(_dots(), DOT_POINTS, np.eye(3), {}, "T2")
    first = augment_batch([sample], np.random.default_rng(5), STRIDE, 1.25)
    torch.manual_seed(123)  # torch's own generator plays no part
    second = augment_batch([sample], np.random.default_rng(5), STRIDE, 1.25)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
