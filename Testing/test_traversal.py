"""The spine walk: finds every vertebra with a perfect predictor, and always terminates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from spineseg.anatomy import level_to_position, position_to_level
from spineseg.networks.unet3d import IterativeFCN, IterativeFCNConfig
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.metrics import dice
from spineseg.vertebrae.levels import assign_levels
from spineseg.networks.vertebra_model import PatchPrediction, VertebraModel, VertebraModelSettings
from spineseg.vertebrae.patches import OUTSIDE_VALUE, normalise_ct
from spineseg.vertebrae.pipeline import keep_spine_column, label_working_grid
from spineseg.vertebrae.traversal import (
    FoundVertebra, TraversalSettings, out_of_column_reach, piece_limit, traverse,
)

SMALL = TraversalSettings(patch_size=32, spacing_mm=4.0)


class OraclePredictor:
    """Knows the true labels: the image encodes each voxel's flat index, so a patch tells where it is."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.encoded = (np.arange(labels.size, dtype=np.float64) + 1.0).reshape(labels.shape)

    def __call__(self, image: np.ndarray, memory: np.ndarray) -> PatchPrediction:
        inside = np.argwhere(image >= 1.0)
        index = np.unravel_index(int(image[tuple(inside[0])]) - 1, self.labels.shape)
        corner = np.array(index) - inside[0]
        patch = np.zeros(image.shape, dtype=self.labels.dtype)
        low = np.maximum(corner, 0)
        high = np.minimum(corner + image.shape[0], self.labels.shape)
        patch[tuple(slice(a - c, b - c) for a, b, c in zip(low, high, corner))] = self.labels[
            tuple(slice(a, b) for a, b in zip(low, high))
        ]
        free = [int(v) for v in np.unique(patch[(patch > 0) & ~memory])]
        if not free:
            return PatchPrediction(np.zeros(image.shape, np.float32), 0.0, 0.0)
        nxt = min(free, key=level_to_position)
        return PatchPrediction(((patch == nxt) & ~memory).astype(np.float32), 1.0, float(level_to_position(nxt)))


def test_oracle_walk_finds_every_vertebra_head_to_foot_and_names_them():
    phantom = make_ct_phantom(list(range(14, 25)) + [26], spacing=(4.0, 4.0, 4.0), seed=2)
    labels = phantom.labels.array
    oracle = OraclePredictor(labels)
    result = traverse(oracle.encoded, oracle, SMALL)
    found = sorted(result.vertebrae, key=lambda v: -v.centroid[2])
    present = sorted((int(v) for v in np.unique(labels) if v), key=level_to_position)
    big = [v for v in present if (labels == v).sum() * 64 >= SMALL.next_fragment_mm3]
    assert len(found) == len(big)
    assert assign_levels([v.position for v in found]) == big
    for vertebra, level in zip(found, big):
        voxels = np.argwhere(labels == level)
        assert np.all(vertebra.centroid >= voxels.min(axis=0)) and np.all(vertebra.centroid <= voxels.max(axis=0))


class OverreachingOracle(OraclePredictor):
    """The oracle, but like the real network it also reaches, unsure (0.6), one voxel into the next vertebra."""

    def __call__(self, image: np.ndarray, memory: np.ndarray) -> PatchPrediction:
        sure = super().__call__(image, memory)
        if not sure.position:
            return sure
        inside = np.argwhere(image >= 1.0)
        flat = (image[tuple(inside.T)] - 1).astype(np.int64)
        patch = np.zeros(image.shape, self.labels.dtype)
        patch[tuple(inside.T)] = self.labels.ravel()[flat]
        below = position_to_level(int(sure.position) + 1) if sure.position < 25 else None
        reach = ndimage.binary_dilation(sure.probability > 0.5) & (patch == below) & ~memory
        probability = np.where(reach, 0.6, sure.probability).astype(np.float32)
        return PatchPrediction(probability, sure.completeness, sure.position)


@pytest.mark.parametrize("memory_probability", [0.5, 0.8])
def test_the_next_vertebra_takes_back_what_the_one_above_reached_into(memory_probability):
    """With the paper's memory (every voxel above 0.5) the overreach stays with the vertebra above;
    remembering only sure voxels lets the next vertebra claim it, and painting gives it the right label."""
    phantom = make_ct_phantom(list(range(18, 25)), spacing=(4.0, 4.0, 4.0), seed=3)
    labels = phantom.labels.array
    oracle = OverreachingOracle(labels)
    settings = TraversalSettings(patch_size=32, spacing_mm=4.0, memory_probability=memory_probability)
    found = sorted(traverse(oracle.encoded, oracle, settings).vertebrae, key=lambda v: -v.centroid[2])
    levels = assign_levels([v.position for v in found])
    painted = label_working_grid(found, levels, labels.shape)
    wrong = int(((painted != labels) & (painted > 0) & (labels > 0)).sum())
    if memory_probability == 0.5:
        assert wrong > 100
    else:
        assert wrong == 0
        assert all(dice(painted == level, labels == level) > 0.99 for level in levels)


def test_empty_volume_needs_no_forward_pass():
    image = np.full((32, 32, 48), normalise_ct(np.array(-1000.0)), np.float32)
    calls = []
    result = traverse(image, lambda i, m: calls.append(1), SMALL)
    assert result.vertebrae == [] and result.forward_passes == 0 and not calls


@pytest.mark.parametrize("probability", [1.0, 0.6])  # sure: all goes to memory; unsure: nothing does
def test_greedy_predictor_that_claims_everything_still_terminates(probability):
    image = np.random.default_rng(0).normal(0.5, 1.0, (50, 50, 80)).astype(np.float32)
    always = lambda i, m: PatchPrediction(np.full(i.shape, probability, np.float32), 1.0, 10.0)  # noqa: E731
    result = traverse(image, always, SMALL)
    assert len(result.vertebrae) <= SMALL.max_pieces
    assert result.forward_passes <= SMALL.max_forward_passes


def test_wandering_predictor_is_stopped_by_the_step_limit():
    """A fragment that jumps away on every look must not keep the walk busy forever."""
    image = np.ones((48, 48, 96), np.float32)
    counter = {"n": 0}

    def wandering(patch, memory):
        counter["n"] += 1
        probability = np.zeros(patch.shape, np.float32)
        offset = 8 if counter["n"] % 2 else 20  # a blob in the scan, jumping 12 voxels on every look
        probability[offset:offset + 8, 12:20, 12:20] = 1.0
        return PatchPrediction(probability, 0.5, 5.0)

    settings = TraversalSettings(patch_size=32, spacing_mm=4.0, max_pieces=3)
    result = traverse(image, wandering, settings)
    assert result.forward_passes <= 3 * (settings.max_refinement_steps + 4) + 40


@pytest.mark.parametrize("kind", ["noise", "bone_block"])
def test_untrained_network_terminates_on_noise_and_a_block_of_bone(kind):
    torch.manual_seed(0)
    settings = VertebraModelSettings(spacing_mm=4.0, patch_size=32, network=IterativeFCNConfig(filters=4))
    model = VertebraModel(IterativeFCN(settings.network), settings, "cpu")
    rng = np.random.default_rng(1)
    if kind == "noise":
        image = rng.normal(0.0, 1.0, (32, 32, 48)).astype(np.float32)
    else:
        image = np.full((32, 32, 48), OUTSIDE_VALUE, np.float32)
        image[8:24, 8:24, 8:40] = 1.2
    walk_settings = TraversalSettings(patch_size=32, spacing_mm=4.0, max_forward_passes=25)
    result = traverse(image, model.predict, walk_settings)
    assert result.forward_passes == model.forward_passes <= 25
    assert len(result.vertebrae) <= walk_settings.max_pieces


def _blobs(shape: tuple[int, int, int], boxes: dict[int, tuple[slice, slice, slice]]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for level, box in boxes.items():
        labels[box] = level
    return labels


@pytest.mark.parametrize("slices", [10, 60])
def test_the_walk_accepts_no_more_pieces_than_the_scans_extent_can_hold(slices):
    """25 separate bone blobs side by side in one slab: a scan 40 mm tall shows at most 4 vertebrae (two whole
    C-spine levels and two cut ones), so the walk stops at 8 pieces; 240 mm tall, it takes all 25."""
    boxes = {level: (slice(2 + 6 * (n % 5), 6 + 6 * (n % 5)), slice(2 + 6 * (n // 5), 6 + 6 * (n // 5)), slice(2, 7))
             for n, level in enumerate(range(1, 26))}
    labels = _blobs((32, 32, slices), {level if level < 25 else 26: box for level, box in boxes.items()})
    oracle = OraclePredictor(labels)
    settings = TraversalSettings(patch_size=16, spacing_mm=4.0, first_fragment_mm3=500.0)
    result = traverse(oracle.encoded, oracle, settings)
    limit = piece_limit(oracle.encoded, settings)
    if slices == 10:
        assert limit == 8 and len(result.vertebrae) == 8 and "can hold" in result.stop_reason
    else:
        assert limit >= 25 and len(result.vertebrae) == 25


def test_a_fragment_that_vanishes_on_closer_look_is_not_searched_again():
    """The predictor sees a blob only from the side of the patch: every search patch overlapping it finds it, and
    the refinement, centring on it, loses it. It is followed once; later search patches ignore it."""
    labels = _blobs((96, 96, 96), {20: (slice(36, 44), slice(36, 44), slice(36, 44))})  # between search centres
    oracle = OraclePredictor(labels)
    centred_looks = []

    def shy(image: np.ndarray, memory: np.ndarray) -> PatchPrediction:
        prediction = oracle(image, memory)
        mask = prediction.probability > 0.5
        if mask.any() and np.linalg.norm(np.argwhere(mask).mean(axis=0) - (np.array(image.shape) - 1) / 2) < 3:
            centred_looks.append(1)
            return PatchPrediction(np.zeros(image.shape, np.float32), 0.0, 0.0)
        return prediction

    result = traverse(oracle.encoded, shy, SMALL)
    assert result.vertebrae == []
    assert len(centred_looks) == 1  # one refinement; without the memory of rejects, one per overlapping patch
    assert result.forward_passes == 5**3 + 1  # every search position (half-patch steps) and that one look


def test_a_fragment_that_is_soft_tissue_in_the_ct_is_not_accepted():
    """The predictor outlines two blobs; one is bone in the CT, the other soft tissue (40 HU, a bowel loop the
    network took for a vertebra). Only the bone is accepted, and the soft blob is not refined again and again."""
    labels = _blobs((64, 32, 64), {19: (slice(8, 16), slice(12, 20), slice(40, 48)),
                                   20: (slice(40, 48), slice(12, 20), slice(20, 28))})
    oracle = OraclePredictor(labels)
    image = oracle.encoded.copy()
    image[labels == 19] = 0.04  # soft tissue, normalised HU
    result = traverse(image, oracle, SMALL)
    assert len(result.vertebrae) == 1
    assert result.vertebrae[0].position == level_to_position(20)
    without_check = traverse(oracle.encoded, oracle, SMALL)
    assert len(without_check.vertebrae) == 2  # the same blob as bone is accepted


def test_stray_bone_beside_an_established_column_is_not_followed():
    """Four vertebrae in a column and a blob 76 mm to the side at the second one's height: once three pieces
    line up, the search rejects the blob without refining it (the pipeline would drop it anyway)."""
    column = {level: (slice(28, 38), slice(12, 20), slice(k - 2, k + 3)) for level, k in zip((20, 21, 22, 23), (70, 62, 54, 46))}
    stray = {26: (slice(47, 55), slice(12, 20), slice(60, 65))}
    labels = _blobs((64, 32, 80), column | stray)
    oracle = OraclePredictor(labels)
    result = traverse(oracle.encoded, oracle, SMALL)
    assert sorted(round(v.centroid[2]) for v in result.vertebrae) == [46, 54, 62, 70]
    assert all(abs(v.centroid[0] - 32.5) < 1 for v in result.vertebrae)


def _piece(centroid_voxels, voxel_count=1000):
    return FoundVertebra(
        corner=np.zeros(3, int), probability=np.zeros((2, 2, 2), np.float16), voxel_count=voxel_count,
        completeness=0.9, position=10.0, centroid=np.asarray(centroid_voxels, float),
    )


def test_stray_pieces_off_the_spinal_column_are_dropped_even_when_found_first():
    """3 mm grid: six vertebrae 30 mm apart in one column; a rib-like run 75 mm to the side, found first."""
    strays = [_piece([14, 40, z], 1500) for z in (60, 50, 40)]
    spine = [_piece([40 + (z % 2), 40 - z // 10, z]) for z in (55, 45, 35, 25, 15, 5)]
    kept = keep_spine_column(strays + spine, spacing_mm=3.0)
    assert [v.centroid[2] for v in kept] == [55, 45, 35, 25, 15, 5]
    # A gap of one missed vertebra (60 mm) keeps the column in one piece; 120 mm splits it.
    assert len(keep_spine_column(spine[:2] + spine[3:], spacing_mm=3.0)) == 5
    assert len(keep_spine_column(spine[:2] + spine[-1:], spacing_mm=3.0)) == 2


def test_search_patches_that_cannot_hold_a_piece_of_the_column_are_skipped():
    """3 mm grid, 40-voxel patches: a column of three vertebrae at i = 40, j = 40 guides the search."""
    column = [_piece([40, 40, z]) for z in (90, 80, 70)]
    reach = lambda corner, found=column: out_of_column_reach(np.array(corner), 40, found, 3.0)  # noqa: E731
    assert not reach([20, 20, 60])  # over the column
    assert not reach([48, 20, 0])  # the patch's near edge is 24 mm to the side: a piece there could join
    assert reach([50, 20, 60])  # 30 mm to the side at every height
    assert reach([-10, 20, 0])  # 33 mm to the other side, below the column
    # 45 mm in front: a piece at the patch's top or bottom, 90 mm from a column piece, may be the sacrum
    assert not reach([20, 55, 60])
    assert not reach([50, 20, 60], column[:2])  # two pieces are no column yet


def test_sacrum_behind_the_last_lumbar_vertebra_stays_in_the_column_but_iliac_wings_do_not():
    """3 mm grid (axes R, A, S): the sacrum's centroid lies 43 mm behind and 42 mm below L5's (as in the real CT);
    iliac-wing pieces lie 60-75 mm to the side between L5 and the sacrum."""
    lumbar = [_piece([39, 41 + z // 20, z], 1800) for z in (63, 51, 39, 25)]
    sacrum = _piece([39.5, 28.0, 11.0], 3400)
    strays = [_piece([14.8, 37.8, 19.9], 1000), _piece([63.0, 46.0, 10.8], 600)]
    kept = keep_spine_column(lumbar + strays + [sacrum], spacing_mm=3.0)
    assert [v.centroid[2] for v in kept] == [63, 51, 39, 25, 11.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_on_the_gpu_matches_float32_on_the_cpu():
    """On CUDA the forward pass runs under float16 autocast; its outputs must stay close to the CPU's."""
    torch.manual_seed(0)
    settings = VertebraModelSettings(patch_size=16, network=IterativeFCNConfig(filters=8))
    network = IterativeFCN(settings.network)
    image = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    memory = image > 1.0
    on_cpu = VertebraModel(network, settings, "cpu").predict(image, memory)
    on_gpu = VertebraModel(network, settings, "cuda").predict(image, memory)
    assert on_gpu.probability.dtype == np.float32
    assert np.abs(on_gpu.probability - on_cpu.probability).max() < 0.01
    assert abs(on_gpu.completeness - on_cpu.completeness) < 0.01


def test_a_batched_search_walks_exactly_as_one_patch_at_a_time():
    """With a batch predictor (the GPU path) search patches are predicted ahead; the vertebrae found are the same."""
    phantom = make_ct_phantom(list(range(14, 25)) + [26], spacing=(4.0, 4.0, 4.0), seed=2)
    oracle = OraclePredictor(phantom.labels.array)
    calls = []

    def batch(images: np.ndarray, memories: np.ndarray) -> list[PatchPrediction]:
        calls.append(len(images))
        return [oracle(image, memory) for image, memory in zip(images, memories)]

    one_by_one = traverse(oracle.encoded, oracle, SMALL)
    batched = traverse(oracle.encoded, oracle, SMALL, predict_batch=batch)
    assert calls and max(calls) > 1
    assert len(batched.vertebrae) == len(one_by_one.vertebrae) > 5
    for a, b in zip(batched.vertebrae, one_by_one.vertebrae):
        assert np.array_equal(a.corner, b.corner) and np.array_equal(a.probability, b.probability)
    assert batched.forward_passes >= one_by_one.forward_passes


def test_a_batch_of_patches_gives_each_patch_its_own_prediction():
    torch.manual_seed(0)
    settings = VertebraModelSettings(patch_size=16, network=IterativeFCNConfig(filters=8))
    model = VertebraModel(IterativeFCN(settings.network), settings, "cpu")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 16, 16, 16)).astype(np.float32)
    memories = images > 1.0
    together = model.predict_batch(images, memories)
    for image, memory, batched in zip(images, memories, together):
        alone = model.predict(image, memory)
        assert np.abs(batched.probability - alone.probability).max() < 1e-5
        assert abs(batched.completeness - alone.completeness) < 1e-5 and abs(batched.position - alone.position) < 1e-4
    assert model.forward_passes == 6
