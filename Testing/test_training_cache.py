"""The cache of prepared training cases: read back unchanged, rebuilt when a file or a setting changes."""

from __future__ import annotations

import numpy as np
import pytest

import spineseg.training.tasks.vertebrae as vertebra_training
from spineseg.cli import main as cli_main
from spineseg.io import write_volume
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.training.cache import cache_folder
from spineseg.training.tasks.vertebrae import cached_vertebra_case


@pytest.fixture
def ct_pair(tmp_path):
    """A small CT and its label map in an ``images/`` + ``labels/`` data folder."""
    phantom = make_ct_phantom([20, 21, 22], spacing=(4.0, 4.0, 4.0), orientation="LPS", seed=3, field_of_view_cut=False)
    write_volume(phantom.image, tmp_path / "data" / "images" / "case1.nii.gz")
    write_volume(phantom.labels, tmp_path / "data" / "labels" / "case1.nii.gz")
    return tmp_path / "data" / "images" / "case1.nii.gz", tmp_path / "data" / "labels" / "case1.nii.gz", phantom


@pytest.fixture
def preparations(monkeypatch):
    """Counts the cases actually prepared (not read from the cache)."""
    calls = []
    prepare = vertebra_training.case_from_files

    def counted(*args):
        calls.append(args)
        return prepare(*args)

    monkeypatch.setattr(vertebra_training, "case_from_files", counted)
    return calls


def test_a_prepared_case_is_read_back_unchanged_and_rebuilt_when_a_file_or_setting_changes(
        tmp_path, ct_pair, preparations):
    image, labels, phantom = ct_pair
    folder = tmp_path / "cache"
    first = cached_vertebra_case(image, labels, 6.0, folder)
    again = cached_vertebra_case(image, labels, 6.0, folder)
    assert len(preparations) == 1 and len(list(folder.iterdir())) == 1
    assert np.array_equal(again.image, first.image) and again.image.dtype == first.image.dtype
    assert np.array_equal(again.labels, first.labels) and again.levels == [20, 21, 22]

    cached_vertebra_case(image, labels, 5.0, folder)  # another working grid
    assert len(preparations) == 2
    changed = phantom.labels.array.copy()
    changed[changed == 22] = 0
    write_volume(phantom.labels.with_array(changed), labels)  # same name, new content
    assert cached_vertebra_case(image, labels, 6.0, folder).levels == [20, 21]
    assert len(preparations) == 3 and len(list(folder.iterdir())) == 3


def test_a_skipped_case_is_cached_as_skipped(tmp_path, ct_pair, preparations):
    image, labels, phantom = ct_pair
    with_l6 = phantom.labels.array.copy()
    with_l6[with_l6 == 22] = 25
    write_volume(phantom.labels.with_array(with_l6), labels)
    assert cached_vertebra_case(image, labels, 6.0, tmp_path / "cache") is None
    assert cached_vertebra_case(image, labels, 6.0, tmp_path / "cache") is None
    assert len(preparations) == 1


def test_prepare_only_fills_the_cache_that_training_then_reads(tmp_path, ct_pair, preparations, monkeypatch):
    monkeypatch.setenv("SPINESEG_CACHE", str(tmp_path / "cache"))
    arguments = ["train", "vertebrae", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--prepare-only", "--set", "model.spacing_mm=6.0", "--set", "data.validation_fraction=0.0"]
    assert cli_main(arguments) == 0
    assert len(preparations) == 1 and len(list(cache_folder("vertebrae").iterdir())) == 1
    assert not (tmp_path / "run").exists()
    image, labels, _ = ct_pair
    cached_vertebra_case(image, labels, 6.0)
    assert len(preparations) == 1
