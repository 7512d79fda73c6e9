import numpy as np
import pytest

from lesionseg.models.geometry import ModelGeometry
from lesionseg.sampling import SAMPLERS, ArraySubject
from lesionseg.sampling.slices import slice_stack

DUNET = ModelGeometry(
    spatial_dims=2,
    in_channels=2,
    num_classes=1,
    size_multiple=(4, 4),
    slice_context=(2, 1),
    output_activation="sigmoid",
)
PLAIN = ModelGeometry(spatial_dims=2, in_channels=1, num_classes=1, size_multiple=(4, 4))


def _coded(shape=(6, 8, 5), channels=2):
    """Voxel value = 1000·channel + flat index + 1 (0 is then only ever padding)."""
    n = int(np.prod(shape))
    return np.stack(
        [1000 * c + 1 + np.arange(n, dtype=np.float32).reshape(shape) for c in range(channels)]
    )


def _subject(sid="a", shape=(12, 12, 10), lesion_slices=(4,), seed=0):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for z in lesion_slices:
        x, y = rng.integers(2, shape[0] - 3), rng.integers(2, shape[1] - 3)
        label[x : x + 2, y : y + 2, z] = 1
    mask = np.ones(shape, np.uint8)
    image = np.stack([rng.normal(size=shape).astype(np.float32), label.astype(np.float32)])
    return ArraySubject(sid, image, label, mask)


def test_stack_is_image_major_and_zero_padded_against_hand_built_volume():
    image = _coded()
    # axis 2, target slice 1: slices -1, 0, 1, 2 -> the first is outside the volume
    stack = slice_stack(image, 1, 2, (2, 1))
    assert stack.shape == (8, 6, 8)
    for c in range(2):
        assert (stack[4 * c + 0] == 0).all()  # slice -1: zeros
        for j, z in enumerate([0, 1, 2], start=1):
            np.testing.assert_array_equal(stack[4 * c + j], image[c, :, :, z])
    # the last slice: i + 1 beyond the end
    stack = slice_stack(image, 4, 2, (2, 1))
    np.testing.assert_array_equal(stack[1], image[0, :, :, 3])
    assert (stack[3] == 0).all() and (stack[7] == 0).all()
    np.testing.assert_array_equal(stack[6], image[1, :, :, 4])
    # window with in-plane padding
    stack = slice_stack(image, 2, 2, (0, 0), start=(-1, 2), size=(8, 4), pad_value=-5)
    np.testing.assert_array_equal(stack[0, 1:7], image[0, :, 2:6, 2])
    assert (stack[:, 0] == -5).all() and (stack[:, 7] == -5).all()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_axis_choice_and_target_alignment(axis):
    image = _coded(shape=(8, 12, 4), channels=1)
    label = (image[0] % 7 == 0).astype(np.uint8)
    subject = ArraySubject("a", image, label, np.ones(label.shape, np.uint8))
    geometry = ModelGeometry(
        spatial_dims=2, in_channels=1, num_classes=1, size_multiple=(4, 4), slice_context=(1, 1)
    )
    sampler = SAMPLERS.build("slices", subjects=[subject], geometry=geometry, axis=axis)
    plane = [image.shape[1 + a] for a in range(3) if a != axis]
    size = tuple(-(-n // 4) * 4 for n in plane)
    assert sampler.example_shapes() == {"image": (3, *size), "target": size}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        ex = sampler.draw(rng)
        centre = ex["image"][1]
        inside = centre > 0
        flat = centre[inside].astype(np.int64) - 1
        idx = np.unravel_index(flat, label.shape)
        assert len(set(idx[axis])) == 1  # one slice, taken along the chosen axis
        i = int(idx[axis][0])
        seen.add(i)
        np.testing.assert_array_equal(label[idx], ex["target"][inside])
        assert (ex["target"][~inside] == 0).all()
        # neighbours in the stack are slices i-1 and i+1 of the same pixels
        for j, di in ((0, -1), (2, 1)):
            if 0 <= i + di < label.shape[axis]:
                shifted = np.array(idx)
                shifted[axis] += di
                np.testing.assert_array_equal(ex["image"][j][inside], image[0][tuple(shifted)])
            else:
                assert (ex["image"][j] == 0).all()
    assert seen == set(range(label.shape[axis]))


def test_oversampling_frequency():
    subjects = [
        _subject("a", lesion_slices=(3,), seed=1),
        _subject("b", lesion_slices=(5, 6), seed=2),
    ]
    rng = np.random.default_rng(0)
    for p in (0.0, 0.3, 0.8, 1.0):
        sampler = SAMPLERS.build("slices", subjects=subjects, geometry=DUNET, lesion_probability=p)
        assert sampler.lesion_slices == 3 and sampler.other_slices == 17
        hits = [sampler.draw(rng)["target"].any() for _ in range(1000)]
        assert abs(np.mean(hits) - p) < 0.05
    # None: every slice equally likely -> the natural share 3/20
    sampler = SAMPLERS.build("slices", subjects=subjects, geometry=DUNET)
    draws = [sampler.draw_slice(rng)[:2] for _ in range(4000)]
    assert abs(np.mean([d in {(0, 3), (1, 5), (1, 6)} for d in draws]) - 0.15) < 0.02
    counts = np.unique(np.array(draws), axis=0, return_counts=True)[1]
    assert len(counts) == 20 and counts.min() > 120  # expected 200 each


def test_brain_only_skips_empty_slices_and_windows_follow_lesions():
    subject = _subject(shape=(40, 36, 10), lesion_slices=(2, 7))
    subject.mask[:, :, :3] = 0  # slice 2 has lesion but no brain
    sampler = SAMPLERS.build(
        "slices", subjects=[subject], geometry=DUNET, size=16, lesion_probability=1.0
    )
    assert sampler.lesion_slices + sampler.other_slices == 7
    assert sampler.example_shapes()["image"] == (8, 16, 16)
    rng = np.random.default_rng(3)
    for _ in range(30):
        s, i, lesion = sampler.draw_slice(rng)
        assert lesion and i == 7
        ex = sampler.draw(rng)
        # larger slices are cut around a lesion pixel: the lesion is inside the window
        assert ex["target"].any()
        # channel 1 of the subject holds the label: the centre slice of channel 1 is the target
        np.testing.assert_array_equal(ex["image"][4 + 2], ex["target"])


def test_batches_are_reproducible_and_augmented_consistently():
    subject = _subject(shape=(16, 16, 8), lesion_slices=(2, 3, 4))
    sampler = SAMPLERS.build(
        "slices",
        subjects=[subject],
        geometry=DUNET,
        lesion_probability=0.5,
        augment=[{"name": "affine2d"}, {"name": "flip", "axes": [0]}],
    )
    a = sampler.batch(6, np.random.default_rng(5))
    b = sampler.batch(6, np.random.default_rng(5))
    assert a["image"].shape == (6, 8, 16, 16) and a["target"].shape == (6, 16, 16)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["target"], b["target"])
    assert set(np.unique(a["target"])) <= {0, 1}
    # the label channel of the image is warped like the target (nearest vs linear: close)
    agree = (a["image"][:, 6] > 0.5) == (a["target"] > 0)
    assert agree.mean() > 0.97


def test_rejects_3d_models_and_bad_options():
    subject = _subject()
    with pytest.raises(ValueError, match="2D models"):
        SAMPLERS.build(
            "slices",
            subjects=[subject],
            geometry=ModelGeometry(spatial_dims=3, in_channels=2, num_classes=2),
        )
    with pytest.raises(ValueError, match="axis"):
        SAMPLERS.build("slices", subjects=[subject], geometry=PLAIN, axis=3)
    with pytest.raises(ValueError, match="lesion_probability"):
        SAMPLERS.build("slices", subjects=[subject], geometry=PLAIN, lesion_probability=1.5)
    # sizes are rounded up to the model's multiple
    sampler = SAMPLERS.build("slices", subjects=[subject], geometry=PLAIN, size=[10, 13])
    assert sampler.size == (12, 16)


def test_uniform_lesion_position_puts_the_lesion_pixel_anywhere_in_the_window():
    """EDD Net's patches: the lesion pixel at a uniformly drawn place, not the centre."""
    label = np.zeros((32, 32, 3), np.uint8)
    label[13, 18, 1] = 1  # one lesion pixel: the drawn one
    subject = ArraySubject("a", label[None].astype(np.float32), label, np.ones_like(label))
    sampler = SAMPLERS.build(
        "slices", subjects=[subject], geometry=PLAIN, size=8, lesion_probability=1.0,
        lesion_position="uniform",
    )  # fmt: skip
    counts = np.zeros((8, 8), int)
    rng = np.random.default_rng(0)
    for _ in range(3200):
        target = sampler.draw(rng)["target"]
        ((u, v),) = np.argwhere(target > 0)
        counts[u, v] += 1
    assert counts.min() > 20 and counts.max() < 90  # about 50 each: every position drawn
    centred = SAMPLERS.build(
        "slices", subjects=[subject], geometry=PLAIN, size=8, lesion_probability=1.0
    )
    positions = {tuple(np.argwhere(centred.draw(rng)["target"] > 0)[0]) for _ in range(50)}
    assert positions == {(3, 3)}  # the default keeps it at the middle
    with pytest.raises(ValueError, match="lesion_position"):
        SAMPLERS.build("slices", subjects=[subject], geometry=PLAIN, lesion_position="random")


def test_lesion_draw_pixel_makes_every_lesion_pixel_equally_likely():
    """EDD Net: a patch per lesion pixel, so a slice is drawn by its lesion pixels."""
    label = np.zeros((16, 16, 2), np.uint8)
    label[3, 3, 0] = 1  # slice 0: one lesion pixel
    label[8:11, 8:11, 1] = 1  # slice 1: nine
    subject = ArraySubject("a", label[None].astype(np.float32), label, np.ones_like(label))
    rng = np.random.default_rng(0)
    shares = {}
    for draw in ("slice", "pixel"):
        sampler = SAMPLERS.build(
            "slices", subjects=[subject], geometry=PLAIN, lesion_probability=1.0,
            lesion_draw=draw,
        )  # fmt: skip
        slices = [sampler.draw_slice(rng)[1] for _ in range(2000)]
        shares[draw] = float(np.mean(np.array(slices) == 1))
    assert abs(shares["slice"] - 0.5) < 0.05  # each lesion slice alike
    assert abs(shares["pixel"] - 0.9) < 0.03  # nine pixels out of ten
    with pytest.raises(ValueError, match="lesion_draw"):
        SAMPLERS.build("slices", subjects=[subject], geometry=PLAIN, lesion_draw="voxel")


def test_lesion_draw_lesion_makes_every_lesion_equally_likely():
    """A lesion of one slice is drawn as often as one of eight, then one of its slices."""
    label = np.zeros((16, 16, 12), np.uint8)
    label[2:4, 2:4, 0] = 1  # lesion A: slice 0 only
    label[8:12, 8:12, 2:10] = 1  # lesion B: slices 2-9
    label[2:4, 12:14, 5] = 1  # lesion C: slice 5 only (shares slice 5 with B)
    subject = ArraySubject("a", label[None].astype(np.float32), label, np.ones_like(label))
    sampler = SAMPLERS.build(
        "slices", subjects=[subject], geometry=PLAIN, lesion_probability=1.0, lesion_draw="lesion"
    )
    rng = np.random.default_rng(0)
    slices = np.array([sampler.draw_slice(rng)[1] for _ in range(6000)])
    # A: 1/3 at slice 0; C: 1/3 at slice 5; B: 1/3 spread over its 8 slices
    assert abs(np.mean(slices == 0) - 1 / 3) < 0.02
    assert abs(np.mean(slices == 5) - (1 / 3 + 1 / 24)) < 0.02
    assert abs(np.mean(slices == 3) - 1 / 24) < 0.01
    assert set(np.unique(slices)) == {0, *range(2, 10)}
