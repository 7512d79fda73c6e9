"""The MSSEG cascade's patch classifier: parameter count, plain-layer equality, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.models.patch_cnn import PatchCNN
from tests.models.steps import adam_losses


def test_paper_network_has_the_papers_715k_parameters():
    model = PatchCNN(4, 2)
    # conv 4·125·32+32, conv 32·125·64+64, dense 1728·256+256, dense 256·2+2
    assert sum(p.numel() for p in model.parameters()) == 16_032 + 256_064 + 442_624 + 514
    assert model.geometry.patch_size == (15, 15, 15)


@pytest.mark.parametrize("pooling", ["max", "average"])
@pytest.mark.parametrize("patch,kernel", [(15, 5), (11, 3), (9, 1)])
def test_trimmed_stages_equal_same_padded_convolutions_and_floor_pooling(pooling, patch, kernel):
    """Computing only the pooled outputs changes nothing (the plain layers as reference)."""
    torch.manual_seed(0)
    model = PatchCNN(3, 2, patch_size=patch, widths=(5, 7), kernel_size=kernel, pooling=pooling)
    model.eval()
    x = torch.randn(4, 3, patch, patch, patch, dtype=torch.float64)
    model.double()
    pool = F.max_pool3d if pooling == "max" else F.avg_pool3d
    y = x
    for stage in model.features:
        conv = stage.conv
        y = pool(F.relu(F.conv3d(y, conv.weight, conv.bias, padding=kernel // 2)), 2)
    expected = model.classifier(y)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-12)


def test_glorot_initialisation():
    model = PatchCNN(4, 2)
    conv = model.features[0].conv
    fan_in, fan_out = 4 * 125, 32 * 125
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(conv.bias) == 0


def test_2d_variant_and_bad_options():
    model = PatchCNN(2, 2, patch_size=13, widths=(4,), spatial_dims=2)
    assert model(torch.randn(3, 2, 13, 13)).shape == (3, 2)
    with pytest.raises(ValueError, match="pooling"):
        PatchCNN(2, 2, pooling="median")
    with pytest.raises(ValueError, match="too small"):
        PatchCNN(2, 2, patch_size=3, widths=(4, 4, 4))


def test_a_few_steps_on_a_tiny_phantom_reduce_the_loss():
    """Bright-centre patches against dark-centre ones: learnable in a few Adam steps."""
    rng = np.random.default_rng(0)
    n = 64
    x = rng.normal(0, 1, (n, 2, 9, 9, 9)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, 0, 3:6, 3:6, 3:6] += 2.0
    model = build_model(
        ModelSpec("patch-cnn", {"patch_size": 9, "widths": [4, 8], "hidden": 16, "dropout": 0.0}),
        2,
        2,
        seed=0,
    )
    losses = adam_losses(model, x, y, steps=25, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]
