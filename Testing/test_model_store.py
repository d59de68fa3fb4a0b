"""Finding and loading models: one loader for both tasks, and manifests that cannot point elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spineseg.choices import Task
from spineseg.networks.disc_model import DiscModel
from spineseg.errors import ModelError
from spineseg.model_store import BUNDLED_MODELS_DIR, DEFAULT_MODELS, find_model, load_model
from spineseg.networks.vertebra_model import VertebraModel


@pytest.fixture
def copied_model(tmp_path) -> Path:
    """The bundled disc model copied into a folder of the user's; returns its manifest."""
    for suffix in (".json", ".safetensors"):
        shutil.copy(BUNDLED_MODELS_DIR / f"{DEFAULT_MODELS[Task.DISCS]}{suffix}", tmp_path)
    return tmp_path / f"{DEFAULT_MODELS[Task.DISCS]}.json"


def edit_manifest(path: Path, **changes) -> None:
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del manifest[key]
    path.write_text(json.dumps(manifest))


def test_one_loader_for_both_tasks_by_name_manifest_and_weights(copied_model):
    vertebrae = load_model("vertebrae", None, "cpu")
    assert isinstance(vertebrae, VertebraModel) and vertebrae.name == "vertebrae-ct-phantom-v4"
    assert vertebrae.settings.spacing_mm == 3.0 and vertebrae.settings.patch_size == 40
    for reference in (None, DEFAULT_MODELS[Task.DISCS], copied_model, copied_model.with_suffix(".safetensors")):
        discs = load_model(Task.DISCS, reference, "cpu")
        assert isinstance(discs, DiscModel) and discs.name == "discs-mri-phantom-v2"
        assert (discs.settings.input_size, discs.settings.output_stride) == (256, 4)
    assert load_model(Task.DISCS, discs) is discs
    with pytest.raises(ModelError, match="cannot run the vertebrae task"):
        load_model(Task.VERTEBRAE, discs)


@pytest.mark.parametrize("weights", ["../../etc/passwd", "/etc/passwd", "..", 7, ""])
def test_weights_outside_the_manifests_folder_are_refused(copied_model, weights):
    edit_manifest(copied_model, weights=weights)
    with pytest.raises(ModelError, match="file name in the manifest's own folder"):
        find_model(copied_model, Task.DISCS)


def test_malformed_manifests_and_unhashed_or_special_weights_are_refused(copied_model):
    edit_manifest(copied_model, sha256=None)
    with pytest.raises(ModelError, match="has no sha256"):
        load_model(Task.DISCS, copied_model)
    weights = copied_model.with_suffix(".safetensors")
    weights.unlink()
    weights.symlink_to("/dev/zero")  # hashing it would never end
    with pytest.raises(ModelError, match="not a regular file"):
        load_model(Task.DISCS, copied_model)
    copied_model.write_text("[1, 2]")
    with pytest.raises(ModelError, match="must hold a JSON object"):
        find_model(copied_model, Task.DISCS)


def test_absurd_settings_are_a_model_error(copied_model):
    edit_manifest(copied_model, input_size=[100, 100])
    with pytest.raises(ModelError, match="lacks valid input settings"):
        load_model(Task.DISCS, copied_model)
