import nibabel as nib
import numpy as np
import pytest

from lesionseg.data.dataset import Subject
from lesionseg.data.nifti import load_nifti, save_nifti
from lesionseg.preprocess import PreprocessConfig, preprocess_subject
from lesionseg.preprocess.crop import bounding_box
from lesionseg.preprocess.resample import resample_to_shape
from tests.conftest import phantom_arrays, write_nifti
from tests.data.test_nifti_io import oblique_lps_affine


def make_subject(tmp_path, affine, shape=(20, 24, 16)):
    images, label, mask = phantom_arrays(shape=shape, seed=3)
    t1 = write_nifti(tmp_path / "t1.nii.gz", images[0], affine, codes=(1, 2))
    flair = write_nifti(tmp_path / "flair.nii.gz", images[1], affine, codes=(1, 2))
    lab = write_nifti(tmp_path / "label.nii.gz", label, affine, codes=(1, 2))
    return Subject("s", {"T1": t1, "FLAIR": flair}, label=lab), images, label


@pytest.mark.parametrize(
    "spacing,shape",
    [(None, None), ((1.0, 1.0, 1.0), None), ((0.7, 0.7, None), None), (None, (32, 32, None))],
)
def test_round_trip_returns_on_the_input_grid(tmp_path, spacing, shape):
    affine = oblique_lps_affine()
    subject, images, label = make_subject(tmp_path, affine)
    config = PreprocessConfig(target_spacing=spacing, target_shape=shape)
    pre = preprocess_subject(subject, ["T1", "FLAIR"], config)
    if shape is not None:
        assert pre.image.shape[1:3] == (32, 32)
    assert pre.image.shape[0] == 2 and pre.image.dtype == np.float32
    # z-scored inside the brain
    inside = pre.mask.astype(bool)
    np.testing.assert_allclose(pre.image[0][inside].mean(), 0, atol=1e-4)
    np.testing.assert_allclose(pre.image[0][inside].std(), 1, atol=1e-3)
    if spacing is not None:
        for s, t in zip(pre.spacing, spacing):
            if t is not None:
                assert abs(s - t) < 0.1 * t
    back_label = pre.record.invert(pre.label, is_label=True)
    assert back_label.shape == label.shape
    out = save_nifti(back_label, pre.record.original_grid, tmp_path / "seg.nii.gz", dtype=np.uint8)
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 2
    if spacing is None and shape is None:
        np.testing.assert_array_equal(back_label, label)  # exact when nothing is resampled
    else:
        dice = 2 * (back_label & label).sum() / (back_label.sum() + label.sum())
        assert dice > 0.8
    probs = np.stack([1.0 - pre.label, pre.label]).astype(np.float32)
    back_probs = pre.record.invert(probs, fill=[1.0, 0.0])
    assert back_probs.shape == (*label.shape, 2)
    np.testing.assert_allclose(back_probs.sum(-1), 1.0, atol=1e-5)


def test_record_survives_json_and_inverts_the_same(tmp_path):
    from lesionseg.preprocess.record import PreprocessRecord

    subject, _, label = make_subject(tmp_path, oblique_lps_affine())
    pre = preprocess_subject(subject, ["T1", "FLAIR"])
    clone = PreprocessRecord.from_json(pre.record.to_json())
    np.testing.assert_array_equal(clone.invert(pre.label, is_label=True), label)
    np.testing.assert_allclose(clone.original_grid.affine, pre.record.original_grid.affine)


def test_canonical_voxel_count_unchanged_without_resampling(tmp_path):
    subject, _, label = make_subject(tmp_path, oblique_lps_affine())
    pre = preprocess_subject(subject, ["T1", "FLAIR"])
    assert int(pre.label.sum()) == int(label.sum())


def test_channel_order_follows_request(tmp_path):
    subject, images, _ = make_subject(tmp_path, np.eye(4))
    a = preprocess_subject(subject, ["T1", "FLAIR"], PreprocessConfig(normalize="none"))
    b = preprocess_subject(subject, ["FLAIR", "T1"], PreprocessConfig(normalize="none"))
    np.testing.assert_array_equal(a.image[0], b.image[1])


def test_bounding_box_with_margin_is_clipped():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 4:6, 8:10] = True
    box = bounding_box(mask, 2)
    assert box == (slice(0, 5), slice(2, 8), slice(6, 10))


def test_resample_to_shape_matches_scipy_zoom_grid_mode():
    from scipy import ndimage

    x = np.random.default_rng(0).random((8, 10, 6)).astype(np.float32)
    ours = resample_to_shape(x, (16, 20, 12), order=1)
    ref = ndimage.zoom(x, 2, order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_n4_removes_a_smooth_bias(tmp_path):
    images, _, mask = phantom_arrays(shape=(32, 32, 24), seed=1, channels=1)
    x = np.indices(mask.shape)[0] / mask.shape[0]
    biased = images[0] * (0.7 + 0.6 * x)
    affine = np.eye(4)
    t1 = write_nifti(tmp_path / "b.nii.gz", biased.astype(np.float32), affine)
    pre_off = preprocess_subject(Subject("b", {"T1": t1}), ["T1"], PreprocessConfig())
    pre_on = preprocess_subject(Subject("b", {"T1": t1}), ["T1"], PreprocessConfig(n4=True))
    inside = pre_on.mask.astype(bool)
    # the left-right intensity trend inside the brain shrinks after N4
    xs = np.indices(pre_on.mask.shape)[0][inside]
    slope_off = np.polyfit(xs, pre_off.image[0][inside], 1)[0]
    slope_on = np.polyfit(xs, pre_on.image[0][inside], 1)[0]
    assert abs(slope_on) < 0.5 * abs(slope_off)
    assert load_nifti(t1).data.shape == mask.shape
