import numpy as np
import pytest
from scipy import ndimage
from skimage.transform import AffineTransform, warp

from lesionseg.augment import Affine2D, RandomAffine2D, build_augmentations


def _example(shape=(24, 20), seed=0, channels=4):
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=(channels, *shape)), (0, 2, 2))
    target = (ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0.1).astype(np.int64)
    return {"image": image.astype(np.float32), "target": target}


def test_identity_parameters_give_identity():
    ex = _example()
    out = Affine2D()(ex)
    np.testing.assert_allclose(out["image"], ex["image"], atol=1e-5)
    np.testing.assert_array_equal(out["target"], ex["target"])
    assert out["image"].dtype == np.float32 and out["target"].dtype == ex["target"].dtype


def test_integer_shift_and_quarter_turn_match_exact_references():
    ex = _example(shape=(16, 16))
    # output pixel o reads input o + t: a shift by (2, -3) pixels
    out = Affine2D(shift=(2, -3), mode="constant", cval=0)(ex)
    np.testing.assert_allclose(out["image"][:, :14, 3:], ex["image"][:, 2:, :13], atol=1e-5)
    np.testing.assert_array_equal(out["target"][:14, 3:], ex["target"][2:, :13])
    # 90 degrees about the centre of a square slice is a transpose plus a flip
    out = Affine2D(rotation=90)(ex)
    reference = np.rot90(ex["image"], k=-1, axes=(1, 2))
    np.testing.assert_allclose(out["image"], reference, atol=1e-4)
    np.testing.assert_array_equal(out["target"], np.rot90(ex["target"], k=-1))


def test_general_warp_matches_scikit_image():
    ex = _example(shape=(30, 26), channels=1)
    transform = Affine2D(
        rotation=17.0, zoom=(1.15, 0.85), shift=(2.5, -1.25), mode="grid-constant"
    )  # skimage pads with cval, then interpolates
    out = transform(ex)
    # the same map written independently: input = R Z (o - c) + c + t, in skimage's (x, y)
    theta = np.deg2rad(17.0)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    a = rot @ np.diag([1.15, 0.85])
    c = np.array([(30 - 1) / 2, (26 - 1) / 2])
    t = c - a @ c + np.array([2.5, -1.25])
    rc = np.eye(3)
    rc[:2, :2], rc[:2, 2] = a, t
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])  # (row, col) <-> (x, y)
    inverse_map = AffineTransform(matrix=swap @ rc @ swap)
    reference = warp(
        ex["image"][0].astype(np.float64),
        inverse_map,
        order=1,
        mode="constant",
        cval=0.0,
        preserve_range=True,
    )
    np.testing.assert_allclose(out["image"][0], reference, atol=1e-4)


def test_deterministic_part_reproduces_and_labels_stay_binary():
    ex = _example()
    random = RandomAffine2D(rotation=20, zoom=0.2, shift=0.1)
    t1 = random.draw(np.random.default_rng(7), ex)
    t2 = random.draw(np.random.default_rng(7), ex)
    assert (t1.rotation, t1.zoom, t1.shift) == (t2.rotation, t2.zoom, t2.shift)
    a, b = t1(ex), t1(ex)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["target"], b["target"])
    rng = np.random.default_rng(1)
    for _ in range(20):
        out = random(ex, rng)
        assert set(np.unique(out["target"])) <= {0, 1}
        assert out["image"].shape == ex["image"].shape
    # the input is left untouched
    np.testing.assert_array_equal(ex["image"], _example()["image"])


def test_random_parameters_follow_the_keras_ranges():
    ex = _example(shape=(40, 50))
    rng = np.random.default_rng(0)
    drawn = [RandomAffine2D().draw(rng, ex) for _ in range(3000)]
    angles = np.array([d.rotation for d in drawn])
    zooms = np.array([d.zoom for d in drawn])
    shifts = np.array([d.shift for d in drawn])
    assert angles.min() >= -20 and angles.max() <= 20 and angles.std() > 10
    assert zooms.min() >= 0.8 and zooms.max() <= 1.2
    assert abs(np.corrcoef(zooms.T)[0, 1]) < 0.1  # independent per axis, as Keras
    assert np.abs(shifts[:, 0]).max() <= 4.0 and np.abs(shifts[:, 1]).max() <= 5.0
    assert np.abs(shifts[:, 1]).max() > 4.5  # scaled by each side
    iso = RandomAffine2D(isotropic_zoom=True).draw(rng, ex)
    assert iso.zoom[0] == iso.zoom[1]


def test_three_d_examples_warp_each_plane_alike_and_recipe_specs_build():
    ex = _example(shape=(12, 14), channels=2)
    stacked = {
        "image": np.repeat(ex["image"][..., None], 3, axis=-1),
        "target": np.repeat(ex["target"][..., None], 3, axis=-1),
    }
    transform = Affine2D(rotation=10, zoom=(0.9, 1.1), spatial_dims=3, axes=(0, 1))
    out = transform(stacked)
    flat = Affine2D(rotation=10, zoom=(0.9, 1.1))(ex)
    for k in range(3):
        np.testing.assert_allclose(out["image"][..., k], flat["image"], atol=1e-6)
        np.testing.assert_array_equal(out["target"][..., k], flat["target"])
    compose = build_augmentations(
        [{"name": "affine2d", "rotation": 0, "zoom": 0, "shift": 0}], spatial_dims=2
    )
    same = compose(ex, np.random.default_rng(0))
    np.testing.assert_allclose(same["image"], ex["image"], atol=1e-5)
    with pytest.raises(ValueError):
        RandomAffine2D(zoom=1.5)
    with pytest.raises(ValueError):
        Affine2D(axes=(0, 0))
