"""Slabs for Brain SegNet: every slab once per epoch, crops that keep the lesion, re-scaling."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.models import ModelGeometry
from lesionseg.sampling import SAMPLERS, ArraySubject
from lesionseg.sampling.loader import BatchLoader

GEOMETRY = ModelGeometry(3, 1, 2, size_multiple=(8, 8, 1))


def _subjects(slices=10, lesion=((20, 30), (12, 19), (3, 5))):
    """Two subjects; the image tells each voxel's subject and slice (for identification)."""
    subjects = []
    for s in range(2):
        label = np.zeros((40, 36, slices), np.uint8)
        (x0, x1), (y0, y1), (z0, z1) = lesion
        label[x0:x1, y0:y1, z0:z1] = 1 + s
        image = np.zeros((1, 40, 36, slices), np.float32)
        image[0] += 100 * s + np.arange(slices)  # slice id
        subjects.append(ArraySubject(f"s{s}", image, label, np.ones_like(label)))
    return subjects


def _sampler(**options):
    spec = dict(depth=4, size=16, order="enumerate")
    spec.update(options)
    return SAMPLERS.build("slabs", subjects=_subjects(), geometry=GEOMETRY, **spec)


def test_every_slab_once_per_epoch_non_overlapping_and_zero_padded():
    sampler = _sampler()
    assert sampler.items() == 2 * 3  # 10 slices in slabs of 4: 0-3, 4-7, 8-9 (+2 zero)
    loader = BatchLoader(sampler, batch_size=4, batches_per_epoch=1, seed=0)
    seen = []
    for batch in loader.epoch(0, 0):
        assert batch["image"].shape[1:] == (1, 16, 16, 4)
        for image in batch["image"].numpy():
            seen.append(tuple(int(v) for v in image[0, 8, 8]))
    expected = {
        tuple(100 * s + z if z < 10 else 0 for z in range(first, first + 4))
        for s in range(2)
        for first in (0, 4, 8)
    }
    assert sorted(seen) == sorted(expected) and len(seen) == 6


def test_crops_hold_the_whole_lesion_of_the_slab():
    sampler = _sampler()
    rng = np.random.default_rng(3)
    for _ in range(30):
        for index in range(sampler.items()):
            s, first = sampler._slabs[index]
            ref = np.asarray(sampler.subjects[s].label)[..., first : first + 4]
            example = sampler.example_at(index, rng)
            assert example["target"].dtype == np.int64
            assert int((example["target"] > 0).sum()) == int((ref > 0).sum())


def test_a_lesion_larger_than_the_window_fills_it():
    sampler = SAMPLERS.build(
        "slabs",
        subjects=_subjects(lesion=((2, 38), (2, 34), (0, 10))),
        geometry=GEOMETRY,
        depth=4,
        size=16,
    )
    example = sampler.example_at(0, np.random.default_rng(0))
    assert (example["target"] > 0).all()


def test_rescaling_keeps_labels_integer_and_the_lesion_inside():
    sampler = _sampler(rescale=[0.5, 1.2], size=24)
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(40):
        example = sampler.example_at(0, rng)  # slab 0-3 of subject 0: lesion slices 3, 4
        target = example["target"]
        assert target.dtype == np.int64 and set(np.unique(target)) <= {0, 1}
        lesion_pixels = int((target[..., 3] > 0).sum())
        ratios.append(lesion_pixels / (10 * 7))  # the lesion's 10×7 pixels, re-scaled
    ratios = np.array(ratios)
    assert ratios.min() < 0.5 and ratios.max() > 1.1  # scales from about 0.5 to 1.2 seen
    assert ((ratios > 0.15) & (ratios < 1.6)).all()  # never cut off (nor invented)


def test_no_rescaling_without_augmentation_and_seeded_examples():
    plain = _sampler(rescale=[0.5, 1.2], augment_probability=0.0)
    for seed in range(10):
        target = plain.example_at(0, np.random.default_rng(seed))["target"]
        assert int((target > 0).sum()) == 10 * 7  # one lesion slice (3) in slab 0-3
    a = _sampler(rescale=[0.5, 1.2]).example_at(2, np.random.default_rng(9))
    b = _sampler(rescale=[0.5, 1.2]).example_at(2, np.random.default_rng(9))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_slab_axis_follows_the_option_and_bad_options_fail():
    geometry = ModelGeometry(3, 1, 2, size_multiple=(1, 8, 8), slice_axis=0)
    sampler = SAMPLERS.build("slabs", subjects=_subjects(), geometry=geometry, depth=5, size=8)
    assert sampler.example_shapes() == {"image": (1, 5, 8, 8), "target": (5, 8, 8)}
    example = sampler.example_at(0, np.random.default_rng(0))
    assert example["image"].shape == (1, 5, 8, 8)
    with pytest.raises(ValueError, match="depth"):
        _sampler(depth=0)
    with pytest.raises(ValueError, match="rescale"):
        _sampler(rescale=[1.2, 0.5])
    with pytest.raises(ValueError, match="3D"):
        SAMPLERS.build(
            "slabs", subjects=_subjects(), geometry=ModelGeometry(2, 1, 2), depth=2, size=8
        )
