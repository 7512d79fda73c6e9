"""The prediction graph and its combiners, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionseg.errors import LesionsegError
from lesionseg.inference.combine import COMBINERS, bayes_fusion, rescore_components
from lesionseg.inference.graph import NetworkInput, check_graph, evaluate, graph_networks
from lesionseg.inference.patches import patch_batches
from lesionseg.inference.predictor import predict_volume
from tests.inference.conftest import CentreThreshold, PatchModel


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _inputs(image, **models):
    def predict(model, img, mask):
        return predict_volume(model, img, mask=mask, tile_size=6)

    return {name: NetworkInput(m.eval(), image, None, predict) for name, m in models.items()}


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, (2, 10, 11, 9)).astype(np.float32)
    img[0] *= 0.3  # no noise voxel reaches the threshold 2: only the two designed components
    img[0, 2:4, 2:4, 2:3] = 5.0  # a small bright component (4 voxels)
    img[0, 5:10, 4:10, 3:8] = 5.0  # a large one (150 voxels)
    return img


def test_product_is_p1_times_p2(image):
    first, second = (
        CentreThreshold(2, 2, context=1, threshold=2.0),
        CentreThreshold(2, 2, context=1, channel=1, threshold=0.0, gain=2.0),
    )
    graph = {"combine": "product", "inputs": ["first", "second"]}
    out = evaluate(graph, _inputs(image, first=first, second=second))
    p1 = _sigmoid(10.0 * (image[0] - 2.0))
    p2 = _sigmoid(2.0 * image[1])
    np.testing.assert_allclose(out[1], p1 * p2, atol=1e-5)
    np.testing.assert_allclose(out[0], 1 - p1 * p2, atol=1e-5)


def test_gate_uses_the_second_network_only_where_the_first_is_sure(image):
    first = CentreThreshold(2, 2, context=1, threshold=2.0)
    second = CentreThreshold(2, 2, context=1, channel=1, threshold=0.0, gain=2.0)
    graph = {"combine": "gate", "inputs": ["first", "second"], "threshold": 0.8}
    out = evaluate(graph, _inputs(image, first=first, second=second))
    p1 = _sigmoid(10.0 * (image[0] - 2.0))
    expected = np.where(p1 > 0.8, _sigmoid(2.0 * image[1]), 0.0)
    np.testing.assert_allclose(out[1], expected, atol=1e-5)


def test_rescore_components_is_bayes_fusion_by_hand(image):
    first = CentreThreshold(2, 2, context=1, threshold=2.0, gain=1.0)  # p(5) = 0.95
    classifier = PatchModel(2, 2)
    with torch.no_grad():
        classifier.scale.fill_(-0.5)  # q = sigmoid(-0.5 · mean of the 3³ patch of channel 0)
    graph = {"combine": "rescore-components", "inputs": ["edd", "muscle"], "max_size": 60}
    out = evaluate(graph, _inputs(image, edd=first, muscle=classifier))
    p = _sigmoid(image[0] - 2.0)
    # by hand: the small component's centroid, its patch, q, and the fusion per voxel
    small = np.zeros(p.shape, bool)
    small[2:4, 2:4, 2:3] = True
    assert np.array_equal(small, (p > 0.5) & (np.indices(p.shape)[0] < 4))
    centre = np.round(np.argwhere(small).mean(0)).astype(int)
    box = tuple(slice(c - 1, c + 2) for c in centre)
    q = _sigmoid(-0.5 * image[0][box].mean())
    expected = p.copy()
    expected[small] = p[small] * q / (p[small] * q + (1 - p[small]) * (1 - q))
    np.testing.assert_allclose(out[1], expected, atol=1e-5)
    assert q < 0.5 and out[1][small].max() < p[small].min()  # a false positive is lowered
    large = (p > 0.5) & ~small
    np.testing.assert_allclose(out[1][large], p[large], atol=1e-6)  # ≥ 60 voxels: kept


def test_bayes_fusion_values():
    assert bayes_fusion(np.array([0.5]), 0.9)[0] == pytest.approx(0.9)
    assert bayes_fusion(np.array([0.8]), 0.5)[0] == pytest.approx(0.8)
    assert bayes_fusion(np.array([0.9]), 0.9)[0] == pytest.approx(0.81 / 0.82)


@pytest.mark.parametrize("size", [(3, 3, 3), (4, 5, 2)])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_patch_batches_equal_patches_of_the_zero_padded_image(size, batch):
    image = np.arange(2 * 4 * 5 * 4, dtype=np.float32).reshape(2, 4, 5, 4) + 1
    points = np.array([[0, 0, 0], [3, 4, 3], [1, 2, 1], [3, 0, 2], [2, 2, 2]])
    before = [s // 2 for s in size]
    padded = np.pad(image, [(0, 0), *((b, s - 1 - b) for b, s in zip(before, size))])
    seen = 0
    for rows, patches in patch_batches(image, points, size, batch):
        assert patches.shape == (len(points[rows]), 2, *size)
        for patch, (x, y, z) in zip(patches, points[rows]):
            expected = padded[:, x : x + size[0], y : y + size[1], z : z + size[2]]
            np.testing.assert_array_equal(patch, expected)
            seen += 1
    assert seen == len(points)


@pytest.mark.parametrize("name", COMBINERS.names())
def test_every_combiner_contract(name, image):
    """Every registered combiner: (K, *spatial) probabilities in [0, 1] summing to 1."""
    first = CentreThreshold(2, 2, context=1, threshold=2.0)
    second = PatchModel(2, 2) if name == "rescore-components" else CentreThreshold(2, 2, 1)
    names = ["a", "b"][: getattr(COMBINERS.get(name), "arity", None) or 2]
    node = check_graph({"combine": name, "inputs": names}, {"a", "b"})
    out = evaluate(node, _inputs(image, a=first, b=second))
    assert out.shape == (2, *image.shape[1:]) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)


def test_check_graph_names_the_bad_part():
    good = check_graph({"combine": "product", "inputs": ["a", "b"]}, {"a", "b"})
    assert graph_networks(good) == ["a", "b"]
    with pytest.raises(LesionsegError, match="no network 'c'"):
        check_graph({"combine": "mean", "inputs": ["a", "c"]}, {"a", "b"})
    with pytest.raises(LesionsegError, match="unknown combiner"):
        check_graph({"combine": "max", "inputs": ["a"]}, {"a"})
    with pytest.raises(LesionsegError, match=r"predict.graph.treshold"):
        check_graph({"combine": "gate", "inputs": ["a", "b"], "treshold": 1}, {"a", "b"})


class _Given:
    """A graph input with a given dense map and a given classifier answer."""

    def __init__(self, foreground=None, q=None):
        self.foreground, self.q, self.asked = foreground, q, None

    def dense(self, where=None):
        return np.stack([1 - self.foreground, self.foreground]).astype(np.float32)

    def at(self, points, probability=None):
        self.asked = np.asarray(points)
        return np.tile([1 - self.q, self.q], (len(points), 1)).astype(np.float32)


def test_rescore_components_stops_at_max_size_pixels_per_slice():
    p = np.zeros((20, 20, 3), np.float32)
    p[0:6, 0:10, 1] = 0.7  # 60 pixels: kept as they are
    p[10:16, 0:10, 1] = 0.8
    p[15, 0, 1] = 0.0  # 59 pixels: re-scored
    p[0:2, 15:17, 0:3] = 0.9  # 12 voxels in 3D, 4 pixels in each of 3 slices: 3 candidates
    segmenter, classifier = _Given(p), _Given(q=0.2)
    out = rescore_components([segmenter, classifier], max_size=60, slice_axis=2, connectivity=8)
    np.testing.assert_array_equal(out[1][0:6, 0:10, 1], p[0:6, 0:10, 1])
    small = p == 0.8
    assert small.sum() == 59
    np.testing.assert_allclose(out[1][small], 0.8 * 0.2 / (0.8 * 0.2 + 0.2 * 0.8), rtol=1e-6)
    np.testing.assert_allclose(out[1][0:2, 15:17], 0.9 * 0.2 / (0.9 * 0.2 + 0.1 * 0.8), rtol=1e-6)
    assert len(classifier.asked) == 4  # the 59-pixel component and three slices' squares
    np.testing.assert_allclose(out[0] + out[1], 1.0, rtol=1e-6)
    # in 3D the square column is one 12-voxel component, the rest as before
    classifier3d = _Given(q=0.2)
    rescore_components([segmenter, classifier3d], max_size=60, slice_axis=None)
    assert len(classifier3d.asked) == 2
