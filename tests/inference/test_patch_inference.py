"""Patch-classifier prediction equals classifying every patch on its own (SPECS §3 point 6)."""

from __future__ import annotations

import numpy as np
import torch

from lesionseg.inference.graph import NetworkInput
from lesionseg.inference.patches import classify_at
from lesionseg.inference.predictor import predict_volume
from lesionseg.models.patch_cnn import PatchCNN


def _one_by_one(model, image, points, size=15):
    """Reference: the zero-padded image, one patch cut and classified at a time."""
    half = size // 2
    padded = np.pad(image, [(0, 0)] + [(half, size - 1 - half)] * 3)
    out = []
    with torch.no_grad():
        for x, y, z in points:
            patch = padded[:, x : x + size, y : y + size, z : z + size]
            logits = model(torch.from_numpy(np.ascontiguousarray(patch))[None])
            out.append(torch.softmax(logits, 1)[0].numpy())
    return np.array(out)


def _model():
    torch.manual_seed(0)
    return PatchCNN(4, 2, widths=(6, 8), hidden=16).eval()


def _image(shape=(19, 17, 16)):
    rng = np.random.default_rng(1)
    return rng.normal(0, 1, (4, *shape)).astype(np.float32)


def test_predict_volume_equals_each_patch_alone_including_the_border():
    model, image = _model(), _image()
    mask = np.zeros(image.shape[1:], np.uint8)
    mask[::2, ::3, :] = 1  # scattered voxels, every border included
    probs = predict_volume(model, image, mask=mask)
    points = np.argwhere(mask > 0)
    rng = np.random.default_rng(2)
    corners = [p for p in points if (p == 0).any() or (p == np.array(mask.shape) - 1).any()]
    chosen = np.concatenate([np.array(corners[:40]), points[rng.choice(len(points), 60)]])
    expected = _one_by_one(model, image, chosen)
    np.testing.assert_allclose(
        probs[:, chosen[:, 0], chosen[:, 1], chosen[:, 2]].T, expected, atol=1e-5
    )
    outside = mask == 0
    assert (probs[1][outside] == 0).all() and (probs[0][outside] == 1).all()


def test_small_batches_give_the_same_result(monkeypatch):
    import lesionseg.inference.patches as patches

    model, image = _model(), _image((12, 11, 10))
    whole = predict_volume(model, image)
    monkeypatch.setattr(patches, "MAX_BATCH", 7)
    monkeypatch.setattr(patches, "patch_batch_size", lambda *a, **k: 7)
    np.testing.assert_allclose(predict_volume(model, image), whole, atol=1e-6)


def test_classify_at_and_the_graph_input_agree_with_patches_alone():
    model, image = _model(), _image((10, 12, 9))
    points = np.array([[0, 0, 0], [9, 11, 8], [5, 6, 4], [0, 11, 3]])
    expected = _one_by_one(model, image, points)
    np.testing.assert_allclose(classify_at(model, image, points), expected, atol=1e-5)
    node = NetworkInput(model, image, None, lambda m, i, w: predict_volume(m, i, mask=w))
    np.testing.assert_allclose(node.at(points), expected, atol=1e-5)
