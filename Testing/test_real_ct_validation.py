"""The real CTs that judge a vertebra model in training: read, scored on their whole levels, never trained on."""

import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.training.config import load_config
from spineseg.vertebrae.real_scans import DEFAULT_REAL_FOLDER, read_real_cts, score_real_ct

needs_real_data = pytest.mark.skipif(not (DEFAULT_REAL_FOLDER / "ct_totalseg_example").is_dir(),
                                     reason=f"the real scans are not beside the checkout ({DEFAULT_REAL_FOLDER})")


@needs_real_data
def test_the_real_cts_are_scored_on_the_levels_their_reference_holds_whole():
    scans = {scan.name: scan for scan in read_real_cts(DEFAULT_REAL_FOLDER)}
    nifti = scans["real CT 3 mm (T11-sacrum)"]
    assert nifti.scored_levels == (19, 20, 21, 22, 23, 24)  # T12-L5: T11 is cut by the top of the scan
    assert set(np.unique(nifti.reference)) == {0, 18, 19, 20, 21, 22, 23, 24, 26}
    assert score_real_ct(nifti.reference, nifti) == {"dice": 1.0, "named": 1.0, "matched_dice": 1.0}
    # the same outlines named one level too high score 0 by level but keep their matched Dice
    shifted = np.where(nifti.reference > 0, nifti.reference - 1, 0).astype(np.uint8)
    scores = score_real_ct(shifted, nifti)
    assert scores["dice"] < 0.05 and scores["named"] == 0.0 and scores["matched_dice"] > 0.95
    dicom = scans["real CT DICOM 2 mm (T11-T12)"]
    assert dicom.scored_levels == (18, 19) and dicom.reference.shape == dicom.image.shape


@needs_real_data
def test_each_real_reference_lies_on_the_bone_of_its_own_scan():
    """The DICOM series' label file stores its rows in the opposite order: it must be placed by geometry."""
    for scan in read_real_cts(DEFAULT_REAL_FOLDER):
        hounsfield = scan.image.array[scan.reference > 0]
        assert np.median(hounsfield) > 150, scan.name  # vertebrae, not the soft tissue a mirrored map would cover
        assert set(scan.scored_levels) <= set(np.unique(scan.reference).tolist())


def test_a_missing_real_folder_is_named_with_what_to_do(tmp_path):
    with pytest.raises(InputError, match=r"no real CTs in .*validation.real_folder"):
        read_real_cts(tmp_path / "nowhere")


def test_the_real_folder_is_a_validation_setting_off_by_default():
    assert load_config("vertebrae", None, []).validation.real_folder == ""
    config = load_config("vertebrae", None, ['validation.real_folder="../shared/data/real"'])
    assert config.validation.real_folder == "../shared/data/real"
