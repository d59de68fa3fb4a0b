"""Training stops on bad data instead of exporting a model trained on NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spineseg.training.tasks.discs import slab_sample_from_files
from spineseg.errors import InputError, SpineSegError
from spineseg.io import write_volume
from spineseg.phantoms.mri import make_mri_phantom
from spineseg.training.trainer import check_finite_loss
from spineseg.volume import VolumeKind


def test_float_disc_labels_are_refused_naming_the_file(tmp_path):
    phantom = make_mri_phantom([20, 21, 22], spacing=(4.0, 2.0, 2.0))
    write_volume(phantom.image, tmp_path / "mri.nii.gz")
    labels = np.zeros(phantom.image.shape, np.float32)
    labels[9, 30, 40] = 3.4
    labels[9, 30, 60] = 4.0
    write_volume(phantom.image.with_array(labels, VolumeKind.LABEL), tmp_path / "labels.nii.gz")
    with pytest.raises(InputError, match=r"labels\.nii\.gz holds 1 voxel\(s\) with non-integer label values \(e\.g\. 3\.4"):
        slab_sample_from_files(tmp_path / "mri.nii.gz", tmp_path / "labels.nii.gz", size=64)


def test_a_non_finite_loss_stops_the_run():
    check_finite_loss(torch.tensor(0.25), 3)
    for value in (float("nan"), float("inf")):
        with pytest.raises(SpineSegError, match="stopped at iteration 7: the loss is"):
            check_finite_loss(torch.tensor(value), 7)
