"""A few training steps lower the heatmap loss; targets and the network agree on shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spineseg.discs.loss import heatmap_loss
from spineseg.networks.hourglass import AttentionHourglassNet, HourglassConfig
from spineseg.discs.targets import N_CHANNELS, render_heatmaps
from spineseg.training.tasks.discs import augment_batch, phantom_sample


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
