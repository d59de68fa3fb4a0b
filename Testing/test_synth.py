"""The label-map-to-image generator: deterministic per seed, aligned with its labels, wide in appearance."""

from dataclasses import replace

import numpy as np
import pytest

from spineseg.metrics import dice
from spineseg.phantoms.ct import make_ct_phantom, random_ct_phantom
from spineseg.phantoms.ct_appearance import CT_APPEARANCE, METAL, ct_generation_classes, synthesize_ct
from spineseg.phantoms.ct_tissue import Tissue
from spineseg.phantoms.synth import OUTSIDE_CLASS, AppearanceModel, ClassPrior, synthesize
from spineseg.training.tasks.vertebrae import phantom_cases
from spineseg.training.vertebra_sampler import PatchSampler, SamplerConfig
from conftest import REAL_DATA

BONE = (Tissue.CORTEX, Tissue.CANCELLOUS, Tissue.ENDPLATE)


@pytest.fixture(scope="module")
def phantom():
    return make_ct_phantom(list(range(19, 23)), spacing=2.0, seed=4)


def test_every_vertebra_voxel_is_bone_in_the_tissue_map(phantom):
    labelled = phantom.labels.array > 0
    assert np.isin(phantom.tissue.array[labelled], (Tissue.CORTEX, Tissue.CANCELLOUS)).all()
    # and the classes outside the vertebrae include the soft tissues a CT shows around the spine
    present = set(np.unique(phantom.tissue.array[~labelled]).tolist())
    assert {Tissue.FAT, Tissue.PARASPINAL_MUSCLE, Tissue.NUCLEUS, Tissue.ANNULUS, Tissue.CSF} <= present


def test_the_same_seed_gives_the_same_image_and_another_seed_another(phantom):
    first = synthesize_ct(phantom.tissue.array, phantom.image.spacing, np.random.default_rng(11))
    again = synthesize_ct(phantom.tissue.array, phantom.image.spacing, np.random.default_rng(11))
    other = synthesize_ct(phantom.tissue.array, phantom.image.spacing, np.random.default_rng(12))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 5.0
    assert first.shape == phantom.labels.shape and first.dtype == np.float32


def test_realistic_ct_appearance_keeps_the_cortex_bright_and_reaches_fatty_marrow(phantom):
    realistic = replace(CT_APPEARANCE, realistic_probability=1.0)
    tissue = phantom.tissue.array
    marrow = []
    for seed in range(12):
        image = synthesize(ct_generation_classes(tissue, np.random.default_rng(seed)), phantom.image.spacing,
                           realistic, np.random.default_rng(seed))
        assert image[tissue == Tissue.CORTEX].mean() > image[tissue == Tissue.PARASPINAL_MUSCLE].mean() + 100.0
        marrow.append(image[tissue == Tissue.CANCELLOUS].mean())
    # osteoporotic, fatty marrow as dark as muscle or darker in some draws, dense marrow in others
    assert min(marrow) < 50.0 and max(marrow) > 200.0


def test_outside_voxels_stay_at_the_bottom_of_the_range():
    classes = np.full((12, 12, 12), Tissue.PSOAS, np.uint8)
    classes[:, :, :4] = OUTSIDE_CLASS
    image = synthesize(classes, (3.0, 3.0, 3.0), CT_APPEARANCE, np.random.default_rng(3))
    assert (image[:, :, :4] == CT_APPEARANCE.value_range[0]).all()
    assert image[:, :, 6:].min() > CT_APPEARANCE.value_range[0]


def test_metal_objects_are_bright_and_only_sometimes_present(phantom):
    seeds_with_metal = [s for s in range(80)
                        if (ct_generation_classes(phantom.tissue.array, np.random.default_rng(s)) == METAL).any()]
    assert 0 < len(seeds_with_metal) < 20
    seed = seeds_with_metal[0]
    image = synthesize_ct(phantom.tissue.array, phantom.image.spacing, np.random.default_rng(seed))
    classes = ct_generation_classes(phantom.tissue.array, np.random.default_rng(seed))
    assert image[classes == METAL].mean() > 1000.0


def _bright_bone_model() -> AppearanceModel:
    """Vertebral bone at 1000 HU, everything else at 0 HU, a little blur: bone is where the image is bright."""
    priors = {int(t): ClassPrior((1000.0, 1000.0)) if t in BONE else ClassPrior((0.0, 0.0)) for t in Tissue}
    return AppearanceModel(priors=priors, random_mean=(0.0, 0.0), random_texture=(0.0, 0.0),
                           value_range=(-1024.0, 3071.0), realistic_probability=1.0, kernel_mm=(0.3, 0.3),
                           slice_thickness_mm=(0.5, 0.5))


def test_bright_bone_classes_give_an_image_aligned_with_the_labels(phantom):
    image = synthesize(phantom.tissue.array, phantom.image.spacing, _bright_bone_model(), np.random.default_rng(0))
    assert dice(image > 500, phantom.labels.array > 0) > 0.9


@pytest.mark.parametrize("warp", [False, True])
def test_synthetic_training_patches_stay_aligned_with_their_targets(warp):
    """Every patch drawn anew, warped and zoomed or not: the target vertebra is where the image shows bone."""
    cases = phantom_cases(2, 3.0, 21)
    model = _bright_bone_model()
    config = SamplerConfig(synthetic_probability=1.0, empty_every=1000, elastic_probability=float(warp),
                           scale_range=0.15 if warp else 0.0, blank_probability=0.0, flip_probability=0.5,
                           noise_std=0.0, intensity_shift=0.0, intensity_scale=0.0, blur_probability=0.0)
    sampler = PatchSampler(cases, config, np.random.default_rng(5),
                           lambda classes, spacing, rng: synthesize(classes, (spacing,) * 3, model, rng))
    checked = 0
    for _ in range(10):
        patch = sampler.sample()
        image, target = patch.inputs[0], patch.target[0] > 0.5
        assert image.shape == target.shape == (40, 40, 40)
        if target.sum() > 20:
            assert (image[target] > 0.5).mean() > 0.85  # normalised: 500 HU
            checked += 1
    assert checked >= 5


def test_phantoms_with_real_shapes_differ_from_analytic_ones_but_keep_their_levels():
    from spineseg.phantoms.real_shapes import load_sample_folder
    sample = REAL_DATA / "ct_verse_sample"
    if not sample.is_dir():
        pytest.skip(f"the VerSe sample is not beside the checkout ({sample})")
    library = load_sample_folder(sample)
    for seed in range(4):
        analytic = random_ct_phantom(np.random.default_rng(seed), spacing=3.0)
        real = random_ct_phantom(np.random.default_rng(seed), spacing=3.0, real_shapes=library)
        assert set(np.unique(analytic.labels.array)) == set(np.unique(real.labels.array))
        if analytic.labels.shape == real.labels.shape and (analytic.labels.array != real.labels.array).any():
            return
    pytest.fail("no phantom took a real shape in four seeds")


def test_background_patches_lie_anywhere_and_ask_for_nothing():
    """Background patches: empty targets, centred all over the scan rather than on a vertebra."""
    cases = phantom_cases(1, 3.0, 8)
    config = SamplerConfig(background_probability=1.0, synthetic_probability=0.5)
    sampler = PatchSampler(cases, config, np.random.default_rng(2),
                           lambda classes, spacing, rng: synthesize(classes, (spacing,) * 3, _bright_bone_model(), rng))
    patches = [sampler.sample() for _ in range(30)]
    assert not any(p.has_target or p.target.any() for p in patches)
    without_bone = [p for p in patches if not p.inputs[1].any()]  # no vertebra in the memory: off the spine
    assert len(without_bone) >= 5


def test_the_sampler_and_the_generator_mark_outside_voxels_alike():
    """The sampler keeps its own copy (inference must not import phantoms); the two must agree."""
    from spineseg.training.vertebra_sampler import OUTSIDE_CLASS as SAMPLER_OUTSIDE_CLASS
    assert SAMPLER_OUTSIDE_CLASS == OUTSIDE_CLASS


def test_a_misplaced_memory_takes_the_top_of_the_target_or_leaves_out_the_bottom_of_the_vertebra_above():
    """Memory errors as a walk makes them: the target is what is left of its vertebra, never the leftover above."""
    case = phantom_cases(1, 3.0, 3)[0]
    level = case.levels[len(case.levels) // 2]
    above = [other for other in case.levels if case.levels.index(other) < case.levels.index(level)]
    exact_memory, exact_target = np.isin(case.labels, above), case.labels == level
    sampler = PatchSampler([case], SamplerConfig(memory_error_probability=1.0), np.random.default_rng(0))
    height = np.ptp(np.flatnonzero(exact_target.any(axis=(0, 1)))) + 1
    kinds = set()
    for _ in range(12):
        memory, target = sampler._misplace_memory(exact_memory.copy(), exact_target.copy())
        assert not (memory & target).any()
        if (target == exact_target).all():  # the memory lost the bottom of the vertebra above
            lost = exact_memory & ~memory
            assert not (memory & ~exact_memory).any() and lost.any()
            lowest_kept = np.flatnonzero(memory.any(axis=(0, 1)))[0]
            assert np.flatnonzero(lost.any(axis=(0, 1))).max() < lowest_kept
            kinds.add("lost")
        else:  # the memory took the top of the target: the rest is the target
            taken = exact_target & ~target
            assert (memory == (exact_memory | taken)).all() and target.any()
            taken_rows = np.flatnonzero(taken.any(axis=(0, 1)))
            assert np.flatnonzero(target.any(axis=(0, 1))).max() < taken_rows.min()  # k grows towards the head
            assert 0.05 * height <= taken_rows.size <= 0.55 * height
            kinds.add("taken")
    assert kinds == {"lost", "taken"}


def test_a_thin_scan_patch_shows_8_to_20_slices_across_its_target_and_nothing_beyond():
    from spineseg.vertebrae.patches import OUTSIDE_VALUE
    cases = phantom_cases(1, 3.0, 5)
    config = SamplerConfig(thin_scan_probability=1.0, empty_every=1000, elastic_probability=0.0, blank_probability=0.0,
                           noise_std=0.0, intensity_shift=0.0, intensity_scale=0.0, blur_probability=0.0)
    sampler = PatchSampler(cases, config, np.random.default_rng(1))
    for _ in range(8):
        patch = sampler.sample()
        image, memory, target = patch.inputs[0], patch.inputs[1] > 0.5, patch.target[0] > 0.5
        seen = np.flatnonzero((image != OUTSIDE_VALUE).any(axis=(0, 1)))
        assert 8 <= seen.size <= 20 and seen.size == np.ptp(seen) + 1  # one slab of slices
        outside = np.ones(image.shape[2], bool)
        outside[seen] = False
        assert not target[:, :, outside].any() and not memory[:, :, outside].any()
        assert patch.has_target and target[:, :, seen].any()  # the slab crosses the target
