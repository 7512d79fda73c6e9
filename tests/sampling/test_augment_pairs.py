import numpy as np

from lesionseg.augment import (
    Flip,
    IntensityShift,
    RandomFlip,
    RandomIntensityShift,
    build_augmentations,
)


def _example(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(2, 5, 4, 3)).astype(np.float32),
        "target": rng.integers(0, 3, size=(5, 4, 3)),
    }


def test_flip_reverses_image_and_target_together():
    ex = _example()
    out = Flip([0])(ex)
    np.testing.assert_array_equal(out["image"], ex["image"][:, ::-1])
    np.testing.assert_array_equal(out["target"], ex["target"][::-1])
    back = Flip([0])(out)
    np.testing.assert_array_equal(back["image"], ex["image"])
    both = Flip([0, 2])(ex)
    np.testing.assert_array_equal(both["target"], ex["target"][::-1, :, ::-1])
    # 2D slices: spatial axes are the last two
    ex2 = {"image": ex["image"][:, :, :, 0], "target": ex["target"][:, :, 0]}
    out2 = Flip([1], spatial_dims=2)(ex2)
    np.testing.assert_array_equal(out2["image"], ex2["image"][:, :, ::-1])
    np.testing.assert_array_equal(out2["target"], ex2["target"][:, ::-1])


def test_random_flip_draws_a_deterministic_flip_with_probability_p():
    ex = _example()
    rng = np.random.default_rng(0)
    drawn = [RandomFlip(axes=(0,), p=0.5).draw(rng, ex).axes for _ in range(2000)]
    share = np.mean([d == (0,) for d in drawn])
    assert abs(share - 0.5) < 0.05
    assert RandomFlip(p=0.0).draw(rng, ex).axes == ()
    assert RandomFlip(p=1.0).draw(rng, ex).axes == (0,)
    # the same generator state gives the same parameters
    a = RandomFlip(axes=(0, 1, 2)).draw(np.random.default_rng(7), ex).axes
    b = RandomFlip(axes=(0, 1, 2)).draw(np.random.default_rng(7), ex).axes
    assert a == b


def test_intensity_shift_pair():
    ex = _example()
    out = IntensityShift([0.5, -1.0])(ex)
    np.testing.assert_allclose(out["image"][0], ex["image"][0] + 0.5, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["image"][1], ex["image"][1] - 1.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["target"], ex["target"])
    rng = np.random.default_rng(1)
    offsets = np.array([RandomIntensityShift(std=0.1).draw(rng, ex).offsets for _ in range(4000)])
    assert offsets.shape == (4000, 2)
    np.testing.assert_allclose(offsets.std(axis=0), 0.1, rtol=0.06)
    assert abs(offsets.mean()) < 0.01
    # sigma "example": offsets scale with each channel's standard deviation in the example
    scaled = dict(ex, image=ex["image"] * np.array([1.0, 10.0], np.float32)[:, None, None, None])
    r1 = RandomIntensityShift(std=0.1, sigma="example").draw(np.random.default_rng(2), scaled)
    r0 = RandomIntensityShift(std=0.1, sigma=1.0).draw(np.random.default_rng(2), scaled)
    sd = scaled["image"].reshape(2, -1).std(axis=1)
    np.testing.assert_allclose(r1.offsets, r0.offsets * sd, rtol=1e-5)


def test_build_from_recipe_specs():
    compose = build_augmentations(
        [{"name": "flip", "axes": [0], "p": 1.0}, {"name": "intensity-shift", "std": 0.0}]
    )
    ex = _example()
    out = compose(ex, np.random.default_rng(0))
    np.testing.assert_allclose(out["image"], ex["image"][:, ::-1], atol=1e-6)
