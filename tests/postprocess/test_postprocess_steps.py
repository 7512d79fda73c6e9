"""threshold, min-lesion-size and keep-largest on hand-made probability maps."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.errors import LesionsegError
from lesionseg.postprocess import POSTPROCESS

SHAPE = (8, 12, 12)


def two_class(fg):
    fg = np.asarray(fg, np.float32)
    return np.stack([1 - fg, fg])


def line(labels, start, length, axis=2, value=1):
    """Set ``length`` voxels from ``start`` along ``axis`` to ``value``."""
    index = list(start)
    for i in range(length):
        index[axis] = start[axis] + i
        labels[tuple(index)] = value
    return labels


def probabilities_of(labels, num_classes=2, p=0.9):
    """Probabilities whose argmax is ``labels``."""
    probs = np.full((num_classes, *labels.shape), (1 - p) / (num_classes - 1), np.float32)
    for c in range(num_classes):
        probs[c][labels == c] = p
    return probs


threshold = POSTPROCESS.get("threshold")
min_size = POSTPROCESS.get("min-lesion-size")
keep_largest = POSTPROCESS.get("keep-largest")


def test_threshold_keeps_voxels_over_it_only():
    fg = np.zeros(SHAPE, np.float32)
    fg[1, 1, 1], fg[2, 2, 2], fg[3, 3, 3], fg[4, 4, 4] = 0.7, 0.55, 0.6, 0.3
    labels = threshold(two_class(fg), threshold=0.6)
    assert labels.dtype == np.uint8 and labels.shape == SHAPE
    assert labels[1, 1, 1] == 1 and labels[2, 2, 2] == 0  # 0.7 kept, 0.55 dropped
    assert labels[3, 3, 3] == 1  # at the threshold counts as over it
    assert labels.sum() == 2
    # default 0.5: the 0.55 voxel is lesion too
    assert threshold(two_class(fg))[2, 2, 2] == 1


def test_threshold_per_class_picks_the_most_probable_passing_class():
    #        p0    p1    p2      thresholds {1: 0.6, 2: 0.4}
    cases = [
        ((0.05, 0.50, 0.45), 2),  # class 1 fails, class 2 passes though less probable
        ((0.05, 0.65, 0.30), 1),
        ((0.10, 0.55, 0.35), 0),  # none passes
        ((0.00, 0.60, 0.40), 1),  # both pass: the more probable
        ((0.30, 0.20, 0.50), 2),
    ]
    probs = np.zeros((3, len(cases), 1, 1), np.float32)
    for i, (p, _) in enumerate(cases):
        probs[:, i, 0, 0] = p
    labels = threshold(probs, threshold={1: 0.6, "2": 0.4})
    assert labels[:, 0, 0].tolist() == [want for _, want in cases]
    # classes a mapping leaves out get 0.5
    assert threshold(probs, threshold={1: 0.6})[:, 0, 0].tolist() == [0, 1, 0, 1, 2]


@pytest.mark.parametrize(
    "value, message",
    [(1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]"), ("high", "probability"), ({0: 0.5}, "class 0"),
     ({3: 0.5}, "class 3"), ({"x": 0.5}, "class 'x'")],
)  # fmt: skip
def test_threshold_bad_values(value, message):
    probs = two_class(np.full((2, 2, 2), 0.5))
    probs = np.concatenate([probs, np.zeros((1, 2, 2, 2), np.float32)])  # K = 3
    with pytest.raises(LesionsegError, match=message):
        threshold(probs, threshold=value)


def components_case():
    """A 9-voxel and a 10-voxel lesion, far apart."""
    labels = np.zeros(SHAPE, np.uint8)
    line(labels, (1, 1, 1), 9)
    line(labels, (5, 5, 1), 10)
    return labels


def test_min_size_in_voxels_removes_smaller_components():
    labels = components_case()
    out = min_size(probabilities_of(labels), size=10, unit="voxels")
    assert out.dtype == np.uint8
    assert out[1].sum() == 0 and out[5].sum() == 10
    # works on the label map an earlier step made, not on the argmax
    out = min_size(
        probabilities_of(np.zeros(SHAPE, np.uint8)), labels=labels, size=10, unit="voxels"
    )
    assert out.sum() == 10
    assert min_size(probabilities_of(labels), size=0, unit="voxels").sum() == 19


def test_min_size_in_mm3_uses_the_spacing():
    labels = np.zeros(SHAPE, np.uint8)
    line(labels, (1, 1, 1), 6)  # 6 voxels of 2 mm³ = 12 mm³
    line(labels, (5, 5, 1), 4)  # 8 mm³
    out = min_size(probabilities_of(labels), size=10, unit="mm3", spacing=(2, 1, 1))
    assert out[1].sum() == 6 and out[5].sum() == 0
    # mm3 is the default unit; with 1 mm voxels both are removed
    assert min_size(probabilities_of(labels), size=10, spacing=(1, 1, 1)).sum() == 0
    # a size exactly met in single-precision spacing is kept
    spacing = np.float32([0.7, 0.7, 0.7])
    out = min_size(probabilities_of(labels), size=6 * 0.7**3, spacing=spacing)
    assert out.sum() == 6


def test_min_size_connectivity_and_classes():
    labels = np.zeros(SHAPE, np.uint8)
    line(labels, (1, 1, 1), 5)
    line(labels, (2, 2, 6), 5)  # touches the first one by a corner only
    both = probabilities_of(labels)
    assert min_size(both, size=10, unit="voxels").sum() == 10  # 26-connected: one of 10
    assert min_size(both, size=10, unit="voxels", connectivity=18).sum() == 0
    assert min_size(both, size=10, unit="voxels", connectivity=6).sum() == 0
    # components of different classes do not join, even when they touch
    labels = np.zeros(SHAPE, np.uint8)
    line(labels, (1, 1, 0), 6, value=1)
    line(labels, (1, 1, 6), 6, value=2)
    out = min_size(probabilities_of(labels, 3), size=10, unit="voxels")
    assert out.sum() == 0
    out = min_size(probabilities_of(labels, 3), size=6, unit="voxels")
    np.testing.assert_array_equal(out, labels)


@pytest.mark.parametrize(
    "options, message",
    [({"size": -1}, "size"), ({"size": 5, "unit": "ml"}, "unit"),
     ({"size": 5, "unit": "voxels", "connectivity": 8}, "connectivity"),
     ({"size": 5, "unit": "mm3"}, "spacing")],
)  # fmt: skip
def test_min_size_bad_options(options, message):
    with pytest.raises(LesionsegError, match=message):
        min_size(probabilities_of(components_case()), **options)


def test_keep_largest_per_class():
    labels = np.zeros(SHAPE, np.uint8)
    line(labels, (1, 1, 1), 5, value=1)
    line(labels, (1, 8, 1), 3, value=1)
    line(labels, (5, 1, 1), 4, value=2)
    line(labels, (5, 8, 1), 2, value=2)
    line(labels, (7, 1, 1), 7, value=2)  # the largest of class 2
    out = keep_largest(probabilities_of(labels, 3))
    assert out.dtype == np.uint8
    assert (out == 1).sum() == 5 and out[1, 1, 1:6].all()
    assert (out == 2).sum() == 7 and out[7, 1, 1:8].all()
    # from the label map an earlier step made; 6-connectivity splits a diagonal pair
    diagonal = np.zeros(SHAPE, np.uint8)
    line(diagonal, (1, 1, 1), 3)
    line(diagonal, (2, 2, 4), 2)
    empty = probabilities_of(np.zeros(SHAPE, np.uint8))
    assert keep_largest(empty, labels=diagonal).sum() == 5
    assert keep_largest(empty, labels=diagonal, connectivity=6).sum() == 3
    assert not keep_largest(empty).any()
