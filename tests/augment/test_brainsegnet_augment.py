"""Brain SegNet's augmentations: per-slice intensity scaling and quarter-turn rotations."""

import numpy as np
import pytest

from lesionseg.augment import (
    AUGMENTATIONS,
    IntensityScale,
    RandomIntensityScale,
    RandomRot90,
    Rot90,
    build_augmentations,
)
from lesionseg.errors import LesionsegError


def _example(shape=(6, 6, 4), channels=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(channels, *shape)).astype(np.float32),
        "target": rng.integers(0, 3, size=shape).astype(np.int64),
        "mask": (rng.random(size=shape) > 0.3).astype(np.uint8),
    }


def _copy(example):
    return {k: v.copy() for k, v in example.items()}


# --- rot90 -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rot90_is_exact_on_every_channel_target_and_mask(k):
    ex = _example()
    kept = _copy(ex)
    out = Rot90(k, axes=(0, 1))(ex)
    for c in range(ex["image"].shape[0]):
        np.testing.assert_array_equal(out["image"][c], np.rot90(ex["image"][c], k, axes=(0, 1)))
    np.testing.assert_array_equal(out["target"], np.rot90(ex["target"], k, axes=(0, 1)))
    np.testing.assert_array_equal(out["mask"], np.rot90(ex["mask"], k, axes=(0, 1)))
    assert out["image"].dtype == np.float32
    assert out["target"].dtype == np.int64 and out["mask"].dtype == np.uint8
    assert set(np.unique(out["target"])) == set(np.unique(ex["target"]))
    # every slice along the remaining axis gets the same rotation
    for z in range(ex["target"].shape[2]):
        np.testing.assert_array_equal(out["target"][:, :, z], np.rot90(ex["target"][:, :, z], k))
    for key in ex:  # the input is left untouched
        np.testing.assert_array_equal(ex[key], kept[key])


def test_four_quarter_turns_and_inverse_give_back_the_original():
    ex = _example()
    out = ex
    for _ in range(4):
        out = Rot90(1)(out)
    for key in ex:
        np.testing.assert_array_equal(out[key], ex[key])
    back = Rot90(-1)(Rot90(1)(ex))
    np.testing.assert_array_equal(back["image"], ex["image"])
    assert Rot90(5).k == 1 and Rot90(-1).k == 3
    # a quarter turn is not the identity (the test example is not symmetric)
    assert not np.array_equal(Rot90(1)(ex)["target"], ex["target"])


def test_rot90_other_planes_and_two_d_examples():
    ex = _example(shape=(5, 4, 5))
    out = Rot90(1, axes=(2, 0))(ex)
    np.testing.assert_array_equal(out["image"], np.rot90(ex["image"], 1, axes=(3, 1)))
    np.testing.assert_array_equal(out["target"], np.rot90(ex["target"], 1, axes=(2, 0)))
    ex2 = _example(shape=(7, 7))
    out2 = Rot90(3, spatial_dims=2)(ex2)
    np.testing.assert_array_equal(out2["image"], np.rot90(ex2["image"], 3, axes=(1, 2)))
    np.testing.assert_array_equal(out2["target"], np.rot90(ex2["target"], 3))


def test_non_square_planes_allow_half_turns_only():
    ex = _example(shape=(6, 4, 3))
    half = Rot90(2)(ex)
    np.testing.assert_array_equal(half["target"], ex["target"][::-1, ::-1])
    assert half["image"].shape == ex["image"].shape
    for k in (1, 3):
        with pytest.raises(ValueError, match="not square"):
            Rot90(k)(ex)
    # the random transform refuses a non-square plane whatever k it would draw
    for seed in range(8):
        with pytest.raises(ValueError, match="not square"):
            RandomRot90().draw(np.random.default_rng(seed), ex)
    # a square image plane with a non-square target plane is refused too
    mixed = dict(_example(shape=(6, 6, 3)), target=np.zeros((6, 5, 3), np.int64))
    with pytest.raises(ValueError, match="'target'"):
        RandomRot90().draw(np.random.default_rng(0), mixed)
    # the plane (0, 2) of a (6, 4, 6) example is square: fine
    RandomRot90(axes=(0, 2)).draw(np.random.default_rng(0), _example(shape=(6, 4, 6)))


def test_random_rot90_draws_all_four_turns_reproducibly():
    ex = _example()
    rng = np.random.default_rng(0)
    ks = np.array([RandomRot90().draw(rng, ex).k for _ in range(4000)])
    counts = np.bincount(ks, minlength=4)
    assert counts.size == 4 and np.all(np.abs(counts / 4000 - 0.25) < 0.03)
    random = RandomRot90(axes=(0, 1), p=1.0)
    out = random(ex, np.random.default_rng(11))
    drawn = random.sample(np.random.default_rng(11), ex)
    again = Rot90(drawn.k, drawn.axes)(ex)  # rebuilt from the drawn parameters
    for key in ex:
        np.testing.assert_array_equal(out[key], again[key])
        np.testing.assert_array_equal(out[key], drawn(ex)[key])


# --- intensity-scale ---------------------------------------------------------------------


def test_intensity_scale_multiplies_each_slice_by_its_own_factor():
    ex = _example(shape=(3, 4, 5))
    factors = [0.8, 0.9, 1.0, 1.1, 1.2]
    out = IntensityScale(factors, axis=2)(ex)
    for z, f in enumerate(factors):
        expected = (ex["image"][:, :, :, z].astype(np.float64) * f).astype(np.float32)
        np.testing.assert_array_equal(out["image"][:, :, :, z], expected)
    assert out["image"].dtype == np.float32
    assert out["target"] is ex["target"] and out["mask"] is ex["mask"]
    # along another axis
    out0 = IntensityScale([2.0, 0.5, 1.0], axis=0)(ex)
    np.testing.assert_allclose(out0["image"][:, 0], ex["image"][:, 0] * 2.0, rtol=1e-6)
    np.testing.assert_allclose(out0["image"][:, 1], ex["image"][:, 1] * 0.5, rtol=1e-6)
    # one factor for the whole example
    whole = IntensityScale(1.1, axis=None)(ex)
    np.testing.assert_allclose(whole["image"], ex["image"] * 1.1, rtol=1e-6)
    with pytest.raises(ValueError, match="5 slices"):
        IntensityScale([1.0, 1.0], axis=2)(ex)


def test_random_intensity_scale_factors_lie_in_range_and_reproduce():
    ex = _example(shape=(4, 4, 12))
    rng = np.random.default_rng(0)
    drawn = np.array([RandomIntensityScale(0.8, 1.2).draw(rng, ex).factors for _ in range(2000)])
    assert drawn.shape == (2000, 12)  # one factor per slice along axis 2
    assert drawn.min() >= 0.8 and drawn.max() <= 1.2
    assert drawn.min() < 0.81 and drawn.max() > 1.19  # the whole range is used
    assert np.all(drawn.std(axis=1) > 0)  # slices get factors of their own
    assert abs(np.corrcoef(drawn[:, 0], drawn[:, 1])[0, 1]) < 0.1
    random = RandomIntensityScale(0.8, 1.2, axis=2)
    out = random(ex, np.random.default_rng(5))
    transform = random.sample(np.random.default_rng(5), ex)
    again = IntensityScale(transform.factors, transform.axis)(ex)  # from the parameters
    np.testing.assert_array_equal(out["image"], again["image"])
    for z, f in enumerate(transform.factors):
        expected = (ex["image"][..., z].astype(np.float64) * f).astype(np.float32)
        np.testing.assert_array_equal(out["image"][..., z], expected)
    np.testing.assert_array_equal(out["target"], ex["target"])
    assert out["target"].dtype == np.int64
    other = random(ex, np.random.default_rng(6))
    assert not np.array_equal(out["image"], other["image"])


def test_whole_example_factor_and_two_d_examples():
    ex = _example(shape=(4, 4, 6))
    t = RandomIntensityScale(per_slice=False).draw(np.random.default_rng(1), ex)
    assert t.axis is None and t.factors.shape == (1,) and 0.8 <= t.factors[0] <= 1.2
    np.testing.assert_allclose(t(ex)["image"], ex["image"] * t.factors[0], rtol=1e-6)
    # a 2D example is one slice: one factor for all of it (the default axis 2 is not used)
    ex2 = _example(shape=(5, 7), channels=3)
    t2 = RandomIntensityScale(spatial_dims=2).draw(np.random.default_rng(2), ex2)
    assert t2.axis is None and t2.factors.shape == (1,)
    out2 = t2(ex2)
    np.testing.assert_allclose(out2["image"], ex2["image"] * t2.factors[0], rtol=1e-6)
    np.testing.assert_array_equal(out2["target"], ex2["target"])


# --- both --------------------------------------------------------------------------------


def test_p_zero_leaves_the_example_unchanged():
    ex = _example()
    rng = np.random.default_rng(0)
    for random in (RandomIntensityScale(p=0.0), RandomRot90(p=0.0)):
        for _ in range(20):
            out = random(ex, rng)
            for key in ex:
                np.testing.assert_array_equal(out[key], ex[key])
            assert random.sample(rng, ex) is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: RandomIntensityScale(low=1.2, high=0.8),
        lambda: RandomIntensityScale(low=0.0, high=1.2),
        lambda: RandomIntensityScale(low=-0.5, high=1.2),
        lambda: RandomIntensityScale(low=0.8, high=float("inf")),
        lambda: RandomIntensityScale(p=1.5),
        lambda: RandomIntensityScale(p=-0.1),
        lambda: RandomIntensityScale(axis=3),
        lambda: IntensityScale([1.0, 0.0, 1.0]),
        lambda: IntensityScale([1.0, -1.0]),
        lambda: IntensityScale([1.0, 1.1], axis=None),
        lambda: IntensityScale([1.0], axis=3),
        lambda: RandomRot90(axes=(1, 1)),
        lambda: RandomRot90(axes=(0, 3)),
        lambda: RandomRot90(axes=(0, 1, 2)),
        lambda: RandomRot90(axes=(0, 2), spatial_dims=2),
        lambda: RandomRot90(p=1.01),
        lambda: RandomRot90(p=-1.0),
        lambda: Rot90(1, axes=(2, 2)),
    ],
)
def test_bad_options_raise_value_error(build):
    with pytest.raises(ValueError):
        build()


def test_recipe_names_build_the_brain_segnet_pipeline():
    assert AUGMENTATIONS.get("intensity-scale") is RandomIntensityScale
    assert AUGMENTATIONS.get("rot90") is RandomRot90
    specs = [
        {"name": "intensity-scale", "low": 0.8, "high": 1.2},
        {"name": "rot90", "axes": [0, 1]},
        {"name": "flip", "axes": [0, 1], "p": 0.5},
    ]
    ex = _example()
    compose = build_augmentations(specs, spatial_dims=3)
    a = compose(ex, np.random.default_rng(3))
    b = compose(ex, np.random.default_rng(3))
    for key in ex:
        np.testing.assert_array_equal(a[key], b[key])
    # replayed by hand from the same generator: scale, then rotate, then flip
    rng = np.random.default_rng(3)
    expected = ex
    for random in compose.transforms:
        transform = random.sample(rng, expected)
        if transform is not None:
            expected = transform(expected)
    for key in ex:
        np.testing.assert_array_equal(a[key], expected[key])
    assert a["target"].dtype == np.int64
    assert set(np.unique(a["target"])) <= {0, 1, 2}
    # the same recipe on 2D slices (spatial_dims is passed on)
    compose2 = build_augmentations(specs, spatial_dims=2)
    out2 = compose2(_example(shape=(6, 6)), np.random.default_rng(0))
    assert out2["image"].shape == (2, 6, 6)
    with pytest.raises(LesionsegError):
        build_augmentations([{"name": "rot90", "axes": [0, 0]}])
    with pytest.raises(LesionsegError):
        build_augmentations([{"name": "intensity-scale", "low": 1.3}])
