import numpy as np
import pytest

from lesionseg.models.geometry import ModelGeometry
from lesionseg.sampling import SAMPLERS, ArraySubject, crop
from lesionseg.sampling.loader import BatchLoader

GEOMETRY = ModelGeometry(spatial_dims=3, in_channels=2, num_classes=3, context=(7, 7, 7))


def _subject(sid="a", shape=(20, 22, 24), seed=0, classes=(1, 2)):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for k in classes:  # a few small blocks of each class
        for _ in range(3):
            c = rng.integers(3, np.array(shape) - 5)
            label[c[0] : c[0] + 2, c[1] : c[1] + 3, c[2] : c[2] + 2] = k
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    label *= mask
    # channel 0 encodes the flat index, channel 1 the label: lets tests check alignment
    image = np.stack(
        [np.arange(np.prod(shape), dtype=np.float32).reshape(shape), label.astype(np.float32)]
    )
    return ArraySubject(sid, image, label, mask)


def test_crop_matches_padding_reference():
    rng = np.random.default_rng(1)
    array = rng.normal(size=(2, 9, 8, 7)).astype(np.float32)
    padded = np.pad(array, [(0, 0), (6, 6), (6, 6), (6, 6)], constant_values=-3.0)
    for _ in range(50):
        start = rng.integers(-6, 6, size=3)
        size = rng.integers(1, 8, size=3)
        expected = padded[
            :,
            start[0] + 6 : start[0] + 6 + size[0],
            start[1] + 6 : start[1] + 6 + size[1],
            start[2] + 6 : start[2] + 6 + size[2],
        ]
        np.testing.assert_array_equal(crop(array, start, size, -3.0), expected)
    assert (crop(array, (20, 0, 0), (2, 2, 2), 5.0) == 5.0).all()


def test_target_and_input_align_with_centre_voxel():
    subject = _subject()
    sampler = SAMPLERS.build(
        "segments", subjects=[subject], geometry=GEOMETRY, output_size=5, pad_value=-1.0
    )
    assert sampler.example_shapes() == {"image": (2, 11, 11, 11), "target": (5, 5, 5)}
    rng = np.random.default_rng(0)
    shape = subject.label.shape
    for _ in range(200):
        s, centre, k = sampler.draw_centre(rng)
        assert subject.mask[centre]  # centres lie in the brain
        label = int(subject.label[centre])
        assert (label > 0) if k == -1 else (label == k)
        ex = sampler.cut(s, centre)
        assert ex["target"][2, 2, 2] == label
        # the input voxel under output voxel j is the volume voxel out_start + j
        flat = ex["image"][0, 3:8, 3:8, 3:8]
        inside = flat >= 0
        idx = np.unravel_index(flat[inside].astype(np.int64), shape)
        np.testing.assert_array_equal(subject.label[idx], ex["target"][inside])
        # outside the volume: pad value in the image, 0 in the target
        assert (ex["image"][0][ex["image"][0] < 0] == -1.0).all()
        centre_flat = np.ravel_multi_index(centre, shape)
        assert ex["image"][0, 5, 5, 5] == centre_flat


@pytest.mark.parametrize("mode", ["fg", "per-class", "uniform"])
def test_class_frequencies(mode):
    subjects = [_subject("a", seed=0), _subject("b", seed=1, classes=(1,)), _subject("c", seed=2)]
    options = {
        "fg": {"foreground_fraction": 0.3},
        "per-class": {"class_probabilities": [0.2, 0.5, 0.3]},
        "uniform": {"class_probabilities": "uniform"},
    }[mode]
    sampler = SAMPLERS.build(
        "segments", subjects=subjects, geometry=GEOMETRY, output_size=3, **options
    )
    rng = np.random.default_rng(3)
    n = 3000
    labels = np.array(
        [subjects[i].label[c] for i, c, _ in (sampler.draw_centre(rng) for _ in range(n))]
    )
    counts = np.bincount(labels, minlength=3) / n
    expected = {
        "fg": [0.7, None, None],
        "per-class": [0.2, 0.5, 0.3],
        "uniform": [1 / 3, 1 / 3, 1 / 3],
    }[mode]
    tol = 4 * np.sqrt(0.25 / n)  # 4 standard errors
    if mode == "fg":
        assert abs(counts[0] - 0.7) < tol and abs(counts[1:].sum() - 0.3) < tol
    else:
        np.testing.assert_allclose(counts, expected, atol=tol)


def test_background_by_rejection_and_absent_class_dropped():
    subject = _subject(classes=(1,))
    sampler = SAMPLERS.build(
        "segments",
        subjects=[subject],
        geometry=GEOMETRY,
        output_size=3,
        class_probabilities={0: 0.5, 1: 0.25, 2: 0.25},
    )
    assert sampler.classes == [0, 1] and np.allclose(sampler.probabilities, [2 / 3, 1 / 3])
    assert sampler._index[0][0].indices is None  # background: no stored index list
    rng = np.random.default_rng(0)
    for _ in range(100):
        _, centre, k = sampler.draw_centre(rng)
        assert subject.mask[centre] and subject.label[centre] == k


def test_bad_options_raise():
    subject = _subject()
    with pytest.raises(ValueError, match="output_size"):
        SAMPLERS.build("segments", subjects=[subject], geometry=GEOMETRY, output_size=[3, 3])
    asym = ModelGeometry(spatial_dims=3, in_channels=2, num_classes=2, context=(4, 4, 4))
    with pytest.raises(ValueError, match="asymmetric"):
        SAMPLERS.build(
            "segments",
            subjects=[subject],
            geometry=asym,
            output_size=3,
            augment=[{"name": "flip", "axes": [0]}],
        )
    unlabelled = ArraySubject("u", subject.image, None, subject.mask)
    with pytest.raises(ValueError, match="no label"):
        SAMPLERS.build("segments", subjects=[unlabelled], geometry=GEOMETRY, output_size=3)


def test_loader_reproducible_across_workers_and_distinct_across_ranks():
    subjects = [_subject("a"), _subject("b", seed=5)]
    sampler = SAMPLERS.build(
        "segments",
        subjects=subjects,
        geometry=GEOMETRY,
        output_size=3,
        augment=[{"name": "flip"}, {"name": "intensity-shift"}],
    )

    def epoch(workers, rank=0, ep=0):
        with BatchLoader(
            sampler, batch_size=3, batches_per_epoch=4, seed=11, rank=rank, workers=workers
        ) as loader:
            return [b["image"].numpy().copy() for b in loader.epoch(0, ep)]

    inline = epoch(0)
    forked = epoch(2)
    assert len(inline) == 4
    for a, b in zip(inline, forked):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(inline[0], epoch(0, rank=1)[0])
    assert not np.array_equal(inline[0], epoch(0, ep=1)[0])
