"""Models whose output is known exactly, for testing the inference side."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lesionseg.models import MODELS, ModelGeometry


class CentreThreshold(nn.Module):
    """Valid-convolution model whose foreground logit is ``gain·(x[channel] − threshold)``
    at the centre of a ``context``³ window (all other weights zero)."""

    def __init__(self, in_channels, num_classes, context=5, channel=0, threshold=2.0, gain=10.0):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, num_classes, context)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            c = context // 2
            self.conv.weight[1:, channel, c, c, c] = gain
            self.conv.bias[1:] = -gain * threshold
        self.geometry = ModelGeometry(3, in_channels, num_classes, context=(context,) * 3)

    def forward(self, x):
        return self.conv(x)


class Pointwise(nn.Module):
    """Same-padded 1×1×1 model (size multiple 4), optionally sigmoid with one map."""

    def __init__(self, in_channels, num_classes, multiple=4, sigmoid=False):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, num_classes, 1)
        self.multiple = multiple
        self.geometry = ModelGeometry(
            3,
            in_channels,
            num_classes,
            size_multiple=(multiple,) * 3,
            output_activation="sigmoid" if sigmoid else "softmax",
        )

    def forward(self, x):
        assert all(s % self.multiple == 0 for s in x.shape[2:])
        return self.conv(x)


class SliceModel(nn.Module):
    """2D same-padded model: foreground logit = sum of the stacked slice channels."""

    def __init__(self, in_channels, num_classes, slice_context=(1, 1)):
        super().__init__()
        self.geometry = ModelGeometry(
            2, in_channels, num_classes, size_multiple=(2, 2), slice_context=tuple(slice_context)
        )
        self.weights = nn.Parameter(torch.arange(1.0, 1 + self.geometry.input_channels_total))

    def forward(self, x):
        assert x.dim() == 4 and x.shape[1] == self.geometry.input_channels_total
        fg = (x * self.weights.view(1, -1, 1, 1)).sum(1, keepdim=True)
        return torch.cat([torch.zeros_like(fg), fg], 1)


class PatchModel(nn.Module):
    """Patch classifier: foreground logit = mean of the 3³ patch of channel 0."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.geometry = ModelGeometry(3, in_channels, num_classes, patch_size=(3, 3, 3))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        fg = x[:, 0].mean((1, 2, 3)) * self.scale
        return torch.stack([torch.zeros_like(fg), fg], 1)


@pytest.fixture(autouse=True)
def test_models_registered():
    """Register the test models for the duration of a test only (saved models name them)."""
    with (
        MODELS.registered("test-centre-threshold", CentreThreshold),
        MODELS.registered("test-pointwise", Pointwise),
        MODELS.registered("test-patch", PatchModel),
    ):
        yield


@pytest.fixture(scope="module")
def deepmedic():
    """A tiny DeepMedic (2 channels, 3 classes) with random batch-norm statistics."""
    from lesionseg.models.deepmedic import DeepMedic
    from tests.models.test_deepmedic import TINY, randomise_bn

    torch.manual_seed(0)
    model = DeepMedic(2, 3, **TINY).eval()
    randomise_bn(model)
    return model
