"""A voxel's network input is the same in training (the sampler) and in prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionseg.inference.predictor import predict_volume, to_probabilities
from lesionseg.models import MODELS
from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.sampling import SAMPLERS, ArraySubject
from tests.models.test_model_contract import SMALL


def _valid_models() -> list[str]:
    names = []
    for name in MODELS.names():
        model = build_model(ModelSpec(name, SMALL.get(name, {})), 2, 2, seed=0)
        if model.geometry.is_valid_convolution and model.geometry.spatial_dims == 3:
            names.append(name)
    return names


@pytest.mark.parametrize("name", _valid_models())
def test_prediction_at_a_voxel_is_the_network_on_the_training_segment(name):
    model = build_model(ModelSpec(name, SMALL.get(name, {})), 2, 2, seed=0).eval()
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (2, 14, 13, 12)).astype(np.float32)
    label = np.zeros(image.shape[1:], np.uint8)
    label[6, 6, 6] = 1
    subject = ArraySubject("s", image, label, np.ones_like(label))
    multiple = model.geometry.size_multiple[0]
    sampler = SAMPLERS.build(
        "segments", subjects=[subject], geometry=model.geometry, output_size=multiple
    )
    probabilities = predict_volume(model, image, tile_size=image.shape[1:])
    # Voxels at the border, where the context reaches far outside the image. DeepMedic's
    # low-resolution features are shared by blocks of `multiple` voxels, so a voxel's output
    # also depends on where it sits in its block: compare voxels at the same place (the
    # centre of a block, as the sampler's centre voxel is).
    for centre in [(1, 1, 1), (13, 10, 10), (1, 7, 4), (4, 1, 10)]:
        assert all(c % multiple == (multiple - 1) // 2 for c in centre)
        segment = sampler.cut(0, centre)["image"]
        with torch.no_grad():
            out = to_probabilities(model(torch.from_numpy(segment[None])), model.geometry)
        at = tuple((o - 1) // 2 for o in sampler.output_size)
        np.testing.assert_allclose(
            out[0][(slice(None), *at)].numpy(), probabilities[(slice(None), *centre)], atol=1e-5
        )
