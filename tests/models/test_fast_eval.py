"""The network the predictor runs (folded batch norms, precision-keeping exact layers,
one-channel 3D convolutions as 2D ones) computes what the model computes, for every model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lesionseg.inference.layout import set_layout
from lesionseg.models import MODELS
from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.models.fast_eval import (
    ConvReLU,
    DepthAsChannelsConv3d,
    InInputPrecision,
    fold_batch_norms,
    foldable_pairs,
    inference_network,
)
from tests.models.test_model_contract import SMALL, _input_size


def _trained_looking(model: nn.Module) -> nn.Module:
    """Batch-norm statistics and affine terms away from 0/1, as after training."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            if m.affine:
                with torch.no_grad():
                    m.weight.copy_(1 + 0.3 * torch.randn(m.num_features, generator=g))
                    m.bias.copy_(0.3 * torch.randn(m.num_features, generator=g))
    return model.eval()


def _logits(out):
    return out if isinstance(out, torch.Tensor) else out[0]


@pytest.mark.parametrize("in_channels", [1, 2])
@pytest.mark.parametrize("name", MODELS.names())
def test_inference_network_computes_what_the_model_computes(name, in_channels):
    model = _trained_looking(build_model(ModelSpec(name, SMALL.get(name, {})), in_channels, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = inference_network(model)
    geometry = model.geometry
    x = torch.randn(2, geometry.input_channels_total, *_input_size(geometry))
    with torch.no_grad():
        expected = _logits(model(x))
        for channels_last in (False, True):
            set_layout(net, channels_last)
            torch.testing.assert_close(_logits(net(x)), expected, rtol=1e-4, atol=1e-4)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is untouched
    if foldable_pairs(model):
        assert net is not model
        assert not foldable_pairs(net)  # every foldable norm was folded


def test_folding_leaves_norms_that_do_not_follow_a_convolution():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.BatchNorm2d(3))
    folded = fold_batch_norms(_trained_looking(model))
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3], nn.BatchNorm2d)
    assert fold_batch_norms(nn.Sequential(nn.Conv2d(2, 3, 3))) is not None


def test_a_model_with_nothing_to_change_is_returned_itself():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Sigmoid()).eval()
    assert inference_network(model) is model


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_relu_is_one_fused_call_equal_to_conv_then_relu(dims, monkeypatch):
    from lesionseg.models import fast_eval

    conv_type, norm_type = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    torch.manual_seed(0)
    model = _trained_looking(nn.Sequential(conv_type(3, 5, 3, padding=1), norm_type(5), nn.ReLU()))
    net = inference_network(model)
    assert isinstance(net[0], ConvReLU) and [type(m) for m in net[1:]] == [nn.Identity] * 2
    calls = []
    real = fast_eval._fused_relu_op()
    assert real is not None  # oneDNN is part of every x86 CPU build

    def recording(*args):
        calls.append(args[7])
        return real(*args)

    monkeypatch.setattr(fast_eval, "_fused_relu_op", lambda: recording)
    x = torch.randn(2, 3, *([6] * dims))
    for channels_last in (False, True):
        set_layout(net, channels_last)
        set_layout(model, channels_last)
        with torch.no_grad():
            torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low, reference = net(x), model(x)
        assert low.dtype == reference.dtype == torch.bfloat16
        torch.testing.assert_close(low.float(), reference.float(), rtol=0.02, atol=0.02)
    assert calls == ["relu"] * 4  # the fused call ran every time, not the fallback
    assert not ConvReLU.fuses(conv_type(3, 5, 3, padding="same"))


@pytest.mark.parametrize(
    ("kernel", "padding"), [((3, 3, 3), (1, 1, 1)), ((3, 5, 1), (0, 2, 0)), ((1, 3, 3), 0)]
)
def test_depth_as_channels_equals_the_3d_convolution(kernel, padding):
    conv = nn.Conv3d(1, 6, kernel, padding=padding).eval()
    assert DepthAsChannelsConv3d.replaces(conv)
    fast = DepthAsChannelsConv3d(conv)
    x = torch.randn(2, 1, 5, 9, 7)
    for channels_last in (False, True):
        set_layout(fast, channels_last)
        with torch.no_grad():
            y = fast(x)
        torch.testing.assert_close(y, conv(x).detach(), rtol=1e-5, atol=1e-5)
        if channels_last and kernel[0] > 1:  # a 3D channels-last map, without a copy
            assert y.is_contiguous(memory_format=torch.channels_last_3d)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low, reference = fast(x), conv(x)
        assert low.dtype == reference.dtype == torch.bfloat16
        torch.testing.assert_close(low.float(), reference.float(), rtol=0.02, atol=0.02)
    assert not DepthAsChannelsConv3d.replaces(nn.Conv3d(2, 6, 3))
    assert not DepthAsChannelsConv3d.replaces(nn.Conv3d(1, 6, 3, stride=2))


def test_exact_layers_keep_bfloat16_under_autocast():
    pool = InInputPrecision(nn.MaxPool3d(2))
    x = torch.randn(1, 3, 4, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = pool(x.bfloat16())
        plain = nn.MaxPool3d(2)(x.bfloat16())
    assert y.dtype == torch.bfloat16  # CPU autocast would have run it in float32
    assert plain.dtype == torch.float32
    torch.testing.assert_close(y.float(), plain)  # the same maxima
