"""Training configuration: defaults, file plus overrides, one clear error per bad setting, shipped recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spineseg.errors import InputError
from spineseg.training.config import (Layout, OptimiserName, ScheduleKind, config_from_dict, config_to_dict,
                                      default_config, load_config, save_config)

RECIPES = Path(__file__).resolve().parents[1] / "SpineSegExtension" / "Resources" / "Training"


def test_task_defaults_are_the_published_settings():
    vertebrae, discs = default_config("vertebrae"), default_config("discs")
    assert (vertebrae.optimiser.name, vertebrae.optimiser.learning_rate, vertebrae.batch_size) == (OptimiserName.ADAM, 1e-3, 1)
    assert (discs.optimiser.name, discs.optimiser.learning_rate) == (OptimiserName.RMSPROP, 2.5e-4)
    assert vertebrae.sampler.patch_size == 40 and discs.model.input_size == 256


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_file_then_overrides_and_the_resolved_config_round_trips(tmp_path, suffix):
    path = tmp_path / f"recipe{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"iterations": 100, "optimiser": {"learning_rate": 0.01}, "data": {"path": "/data"}}))
    else:
        path.write_text('iterations = 100\n[optimiser]\nlearning_rate = 0.01\n[data]\npath = "/data"\n')
    config = load_config("vertebrae", path, ["optimiser.learning_rate=3e-4", "schedule.milestones=[0.5,0.9]",
                                             "data.layout=verse", "epochs=2"])
    assert config.iterations == 100 and config.optimiser.learning_rate == 3e-4
    assert config.schedule.milestones == [0.5, 0.9] and config.data.layout is Layout.VERSE
    assert config.data.path == "/data" and config.epochs == 2.0
    assert config.total_iterations(training_subjects=10, world_size=1) == 20  # 2 passes over 10 subjects
    save_config(config, tmp_path / "config.json")
    assert config_from_dict(json.loads((tmp_path / "config.json").read_text())) == config


@pytest.mark.parametrize("overrides, message", [
    (["optimiser.lr=1"], "unknown setting 'optimiser.lr'"),
    (["optimiser.name=adamw"], "optimiser.name must be one of"),
    (["iterations=1.5"], "iterations must be int"),
    (["sampler.patch_size=20"], "sampler.patch_size must be a multiple of 8"),
    (["checkpoint_interval=75"], "checkpoint_interval must be a positive multiple of log_interval"),
    (["data.validation_fraction=1"], "data.validation_fraction must be in [0, 1)"),
    (["data.layout=bids"], "data.layout for vertebrae must be"),
    (["optimiser=3"], "'optimiser' is a section"),
    (["iterations"], "must look like key.sub=value"),
])
def test_each_bad_setting_is_one_error_naming_it(overrides, message):
    with pytest.raises(InputError) as error:
        load_config("vertebrae", None, overrides)
    assert message in str(error.value)


def test_a_file_for_the_other_task_or_unreadable_is_refused(tmp_path):
    other = tmp_path / "discs.json"
    other.write_text(json.dumps({"task": "discs"}))
    with pytest.raises(InputError, match="for task 'discs', not 'vertebrae'"):
        load_config("vertebrae", other)
    broken = tmp_path / "broken.toml"
    broken.write_text("iterations = \n")
    with pytest.raises(InputError, match="cannot read the configuration"):
        load_config("vertebrae", broken)


def test_shipped_recipes_express_the_bundled_model_runs():
    vertebrae = load_config("vertebrae", RECIPES / "vertebrae-ct-phantom-v2.json")
    assert vertebrae.name == "vertebrae-ct-phantom-v2"
    assert (vertebrae.iterations, vertebrae.data.phantoms, vertebrae.seed, vertebrae.threads) == (12000, 60, 0, 1)
    assert (vertebrae.model.filters, vertebrae.sampler.patch_size, vertebrae.model.spacing_mm) == (16, 40, 3.0)
    assert vertebrae.loss.level_weight == 0.2 and vertebrae.optimiser.learning_rate == 1e-3
    assert (vertebrae.schedule.kind, vertebrae.schedule.milestones, vertebrae.schedule.gamma) == (ScheduleKind.STEP, [0.8], 0.3)
    finetune = load_config("vertebrae", RECIPES / "vertebrae-ct-phantom-v3.json")
    assert finetune.model.initial_weights == "vertebrae-ct-phantom-v2"
    assert (finetune.iterations, finetune.data.phantoms, finetune.seed, finetune.optimiser.learning_rate) == (6000, 100, 1, 3e-4)
    v4 = load_config("vertebrae", RECIPES / "vertebrae-ct-phantom-v4.json")
    assert v4.model.initial_weights == "vertebrae-ct-phantom-v3" and v4.validation.scans == 4
    assert (v4.iterations, v4.data.phantoms, v4.seed, v4.optimiser.learning_rate) == (9000, 150, 2, 2e-4)
    discs = load_config("discs", RECIPES / "discs-mri-phantom-v1.json")
    assert (discs.model.features, discs.batch_size, discs.loss.foreground_weight) == (48, 6, 4.0)
    assert config_to_dict(discs)["optimiser"]["name"] == "adam"


def test_the_disc_sampler_refuses_a_synthetic_share_outside_0_to_1_and_keeps_the_basic_phantoms_by_default():
    with pytest.raises(InputError) as error:
        load_config("discs", None, ["sampler.synthetic_probability=1.5"])
    assert "sampler.synthetic_probability must be in [0, 1], got 1.5" in str(error.value)
    defaults = load_config("discs", None, [])
    assert defaults.sampler.synthetic_probability == 0.0 and defaults.sampler.phantom_variety is False
    assert defaults.sampler.lumbosacral_variety is False
    chosen = load_config("discs", None, ["sampler.synthetic_probability=0.6", "sampler.phantom_variety=true",
                                         "sampler.lumbosacral_variety=true"])
    assert chosen.sampler.synthetic_probability == 0.6 and chosen.sampler.phantom_variety is True
    assert chosen.sampler.lumbosacral_variety is True
