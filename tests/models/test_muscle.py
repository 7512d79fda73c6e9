"""MUSCLE Net and its multi-scale input: parameter count, learning, patch construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionseg.inference.multiscale import multiscale_patches, multiscale_patches_3d
from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.models.muscle import MuscleNet
from tests.models.steps import adam_losses


def _conv(cin, cout):
    return cin * 9 * cout + cout


def test_paper_network_parameter_count_and_geometry():
    model = build_model(ModelSpec("muscle"), 1, 2, seed=0)
    expected = (
        _conv(4, 32) + _conv(32, 32) + _conv(32, 64) + _conv(64, 64)  # 1,184 … 36,928
        + (64 * 8 * 8) * 128 + 128  # one pooling: 16 → 8
        + 128 * 64 + 64
        + 64 * 2 + 2
    )  # fmt: skip
    assert expected == 598_658
    assert sum(p.numel() for p in model.parameters()) == expected
    geometry = model.geometry
    assert geometry.spatial_dims == 2 and geometry.patch_size == (16, 16)
    assert geometry.in_channels == 1 and geometry.input_channels_total == 4
    assert geometry.slice_context == (0, 0)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 1
    # two image channels at two scales: 2·2 + 1 maps
    assert MuscleNet(2, 2, scales=(16, 32)).geometry.input_channels_total == 5
    with pytest.raises(ValueError, match="divisible"):
        MuscleNet(1, 2, patch_size=15)


def test_output_shape_and_every_parameter_gets_a_gradient():
    model = MuscleNet(1, 2).train()
    out = model(torch.randn(3, 4, 16, 16))
    assert out.shape == (3, 2)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_a_few_steps_on_bright_centres_reduce_the_loss():
    rng = np.random.default_rng(0)
    n = 64
    x = rng.normal(0, 1, (n, 4, 16, 16)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, :3, 6:10, 6:10] += 2.0
    model = build_model(
        ModelSpec("muscle", {"widths": [4, 8], "hidden": [16, 8], "dropout": 0.0}), 1, 2, seed=0
    )
    losses = adam_losses(model, x, y, steps=25, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]


def _case():
    rng = np.random.default_rng(3)
    image = rng.normal(0, 1, (40, 44)).astype(np.float32)
    probability = rng.uniform(0, 1, (40, 44)).astype(np.float32)
    centres = np.array([[20, 22], [17, 25], [23, 16]])  # 16+ pixels from the border
    return image, probability, centres


def test_smallest_scale_is_the_plain_crop_and_probability_is_not_resized():
    image, probability, centres = _case()
    out = multiscale_patches(image, probability, centres)
    assert out.shape == (3, 4, 16, 16) and out.dtype == np.float32
    for row, (i, j) in enumerate(centres):
        np.testing.assert_array_equal(out[row, 0], image[i - 8 : i + 8, j - 8 : j + 8])
        np.testing.assert_array_equal(out[row, 3], probability[i - 8 : i + 8, j - 8 : j + 8])


def test_larger_scales_are_area_averages():
    image, probability, centres = _case()
    out = multiscale_patches(image, probability, centres)
    for row, (i, j) in enumerate(centres):
        crop32 = image[i - 16 : i + 16, j - 16 : j + 16].astype(np.float64)
        blocks = crop32.reshape(16, 2, 16, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(out[row, 2], blocks, rtol=0, atol=1e-5)
        # 24 → 16: output pixel k covers input [1.5k, 1.5k + 1.5), fractions weighted
        crop24 = image[i - 12 : i + 12, j - 12 : j + 12].astype(np.float64)
        weights = np.zeros((16, 24))
        for k in range(16):
            lo, hi = 1.5 * k, 1.5 * k + 1.5
            for p in range(24):
                weights[k, p] = max(0.0, min(hi, p + 1) - max(lo, p)) / 1.5
        np.testing.assert_allclose(out[row, 1], weights @ crop24 @ weights.T, atol=1e-5)


def test_zeros_outside_the_image_at_a_corner():
    image, probability, _ = _case()
    image += 10.0  # no pixel of the image is zero
    out = multiscale_patches(image, probability + 1.0, np.array([[0, 0]]))[0]
    np.testing.assert_array_equal(out[0, :8], 0)  # rows −8 … −1
    np.testing.assert_array_equal(out[0, :, :8], 0)
    np.testing.assert_array_equal(out[0, 8:, 8:], image[:8, :8])
    np.testing.assert_array_equal(out[3, :8], 0)
    np.testing.assert_array_equal(out[3, 8:, 8:], probability[:8, :8] + 1.0)
    # 32 pixels: image rows −16 … 15, so output rows 0 … 7 are all outside, 8 … 15 inside
    np.testing.assert_array_equal(out[2, :8], 0)
    np.testing.assert_allclose(
        out[2, 8:, 8:], image[:16, :16].reshape(8, 2, 8, 2).mean((1, 3)), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_version_is_the_slice_version_on_each_centres_slice(axis):
    rng = np.random.default_rng(4)
    volume = rng.normal(0, 1, (20, 22, 18)).astype(np.float32)
    probability = rng.uniform(0, 1, volume.shape).astype(np.float32)
    centres = np.array([[3, 5, 7], [10, 11, 9], [3, 20, 7], [19, 0, 17]])
    out = multiscale_patches_3d(volume, probability, centres, slice_axis=axis)
    assert out.shape == (4, 4, 16, 16)
    plane = [a for a in range(3) if a != axis]
    for row, centre in enumerate(centres):
        index = centre[axis]
        expected = multiscale_patches(
            np.take(volume, index, axis), np.take(probability, index, axis), centre[None, plane]
        )[0]
        np.testing.assert_array_equal(out[row], expected)
    with pytest.raises(ValueError, match="outside"):
        multiscale_patches_3d(volume, probability, np.array([[0, 0, 18]]), slice_axis=2)
