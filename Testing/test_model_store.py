"""Finding and loading models: one loader for both tasks, and manifests that cannot point elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spineseg import tasks
from spineseg.choices import Task
from spineseg.networks.disc_model import DiscModel
from spineseg.errors import ModelError
from spineseg.model_store import BUNDLED_MODELS_DIR, find_model, load_model
from spineseg.networks.vertebra_model import VertebraModel


@pytest.fixture
def copied_model(tmp_path) -> Path:
    """The bundled disc model copied into a folder of the user's; returns its manifest."""
    for suffix in (".json", ".safetensors"):
        shutil.copy(BUNDLED_MODELS_DIR / f"{tasks.get(Task.DISCS).default_model}{suffix}", tmp_path)
    return tmp_path / f"{tasks.get(Task.DISCS).default_model}.json"


def edit_manifest(path: Path, section: str = "", **changes) -> None:
    """Change keys of a manifest (of its ``section``, e.g. "input", when given); None removes a key."""
    manifest = json.loads(path.read_text())
    edited = manifest[section] if section else manifest
    edited.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del edited[key]
    path.write_text(json.dumps(manifest))


def test_one_loader_for_both_tasks_by_name_manifest_and_weights(copied_model):
    vertebrae = load_model("vertebrae", None, "cpu")
    assert isinstance(vertebrae, VertebraModel) and vertebrae.name == "vertebrae-ct-synth-v7"
    assert vertebrae.settings.spacing_mm == 3.0 and vertebrae.settings.patch_size == 40
    for reference in (None, tasks.get(Task.DISCS).default_model, copied_model, copied_model.with_suffix(".safetensors")):
        discs = load_model(Task.DISCS, reference, "cpu")
        assert isinstance(discs, DiscModel) and discs.name == "discs-mri-synth-v3"
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


def test_the_manifest_names_the_network_its_task_runs(copied_model):
    # Both tasks' manifests share one layout: architecture (type: the network class, and its settings), input.
    for task in ("vertebrae", "discs"):
        manifest = json.loads(find_model(None, task).manifest_path.read_text())
        assert manifest["architecture"]["type"] == tasks.get(task).network_class.rpartition(":")[2]
        assert isinstance(manifest["input"], dict)
    edit_manifest(copied_model, "architecture", type="IterativeFCN")
    with pytest.raises(ModelError, match="names the architecture 'IterativeFCN'; the discs task runs "
                                         "'AttentionHourglassNet'"):
        load_model(Task.DISCS, copied_model)


@pytest.mark.parametrize("changes, words", [
    ({"input_size": [100, 100]}, "multiple of"),
    ({"input_size": [65536, 65536]}, "2048"),  # would end in "out of memory", not in a model error
    ({"slab_thickness_mm": 1e6}, "slab_thickness_mm"),
    ({"output_stride": 10_000}, "output_stride"),
])
def test_absurd_settings_are_a_model_error(copied_model, changes, words):
    edit_manifest(copied_model, "input", **changes)
    with pytest.raises(ModelError, match="lacks valid input settings") as refused:
        load_model(Task.DISCS, copied_model)
    assert words in str(refused.value)


@pytest.mark.parametrize("changes, words", [({"spacing_mm": 0.001}, "spacing_mm"), ({"patch_size": 80_000}, "patch_size")])
def test_absurd_vertebra_settings_are_a_model_error_not_out_of_memory(tmp_path, changes, words):
    name = tasks.get(Task.VERTEBRAE).default_model
    for suffix in (".json", ".safetensors"):
        shutil.copy(BUNDLED_MODELS_DIR / f"{name}{suffix}", tmp_path)
    manifest = json.loads((tmp_path / f"{name}.json").read_text())
    manifest["input"].update(changes)
    (tmp_path / f"{name}.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=words):
        load_model(Task.VERTEBRAE, tmp_path / f"{name}.json")


@pytest.mark.parametrize("name", ["vertebrae-ct-synth-v7", "discs-mri-synth-v3"])
def test_a_model_saved_in_the_former_manifest_layout_still_loads(tmp_path, name):
    """Models users trained before the task registry keep loading: their manifests are read in the former
    layout (the vertebra network's settings under input.network, the disc geometry at the top level)."""
    manifest = json.loads((BUNDLED_MODELS_DIR / f"{name}.json").read_text())
    task = Task(manifest["task"])
    if task is Task.VERTEBRAE:
        network = {k: v for k, v in manifest["architecture"].items() if k != "type"}
        manifest["architecture"] = "IterativeFCN (Lessmann et al.), 3D U-Net with completeness and level heads"
        manifest["input"] = {**manifest["input"], "network": network}
    else:
        manifest.update(manifest.pop("input"))
    shutil.copy(BUNDLED_MODELS_DIR / manifest["weights"], tmp_path / manifest["weights"])
    (tmp_path / f"{name}.json").write_text(json.dumps(manifest))
    old = load_model(task, tmp_path / f"{name}.json", "cpu")
    bundled = load_model(task, name, "cpu")
    assert old.settings == bundled.settings
