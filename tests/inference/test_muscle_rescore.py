"""rescore-components with MUSCLE Net: its multi-scale input, the segmenter's map, Bayes fusion."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
import torch

from lesionseg.errors import LesionsegError
from lesionseg.inference.combine import bayes_fusion
from lesionseg.inference.graph import NetworkInput, evaluate
from lesionseg.inference.multiscale import multiscale_patches_3d
from lesionseg.inference.patches import classify_at
from lesionseg.inference.predictor import predict_volume
from lesionseg.models.muscle import MuscleNet
from tests.inference.conftest import CentreThreshold


def _image():
    rng = np.random.default_rng(0)
    img = (0.3 * rng.normal(0, 1, (1, 24, 26, 4))).astype(np.float32)
    img[0, 3:5, 4:6, 1] = 5.0  # small components, one per slice
    img[0, 10:13, 15:17, 2] = 5.0
    img[0, 12:24, 2:14, 0] = 5.0  # a large one (144 pixels)
    return img


def test_small_components_are_rescored_by_muscle_on_its_multiscale_input():
    torch.manual_seed(0)
    image = _image()
    segmenter = CentreThreshold(1, 2, context=1, threshold=2.0).eval()
    muscle = MuscleNet(1, 2, widths=(4, 4), hidden=(8, 8)).eval()

    def predict(model, img, mask):
        return predict_volume(model, img, mask=mask)

    inputs = {
        "edd": NetworkInput(segmenter, image, None, predict),
        "muscle": NetworkInput(muscle, image, None, predict),
    }
    node = {"combine": "rescore-components", "inputs": ["edd", "muscle"], "slice_axis": 2}
    out = evaluate(node, inputs)

    # by hand: per-slice components of p > 0.5 under 60 pixels, MUSCLE at their centroids
    p = predict_volume(segmenter, image)[1]
    expected = p.copy()
    for z in range(p.shape[2]):
        labels = cc3d.connected_components(np.ascontiguousarray(p[..., z] > 0.5), connectivity=8)
        for k in range(1, labels.max() + 1):
            where = labels == k
            if where.sum() >= 60:
                continue
            cx, cy = np.round(np.argwhere(where).mean(0)).astype(int)
            patch = multiscale_patches_3d(image, p, np.array([[cx, cy, z]]), slice_axis=2)
            with torch.no_grad():
                q = torch.softmax(muscle(torch.from_numpy(patch)), 1)[0, 1].item()
            expected[..., z][where] = bayes_fusion(p[..., z][where], q)
    np.testing.assert_allclose(out[1], expected, atol=1e-5)
    large = image[0] > 2.0
    large[..., 1:] = False  # the 144-pixel component of slice 0 keeps its probabilities
    np.testing.assert_allclose(out[1][large], p[large], atol=1e-6)


def test_a_multiscale_classifier_needs_the_segmenters_map():
    muscle = MuscleNet(1, 2, widths=(4, 4), hidden=(8, 8)).eval()
    with pytest.raises(LesionsegError, match="probabilities"):
        classify_at(muscle, _image(), np.array([[3, 4, 1]]))
