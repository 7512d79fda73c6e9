"""Brain SegNet: parameter count, slab shapes, in-plane-only sampling, slice axis, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.models import MODELS
from lesionseg.models.brainsegnet import BrainSegNet, RefineUnit
from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.models.counting import param_count
from tests.models.steps import adam_losses

#: Reduced widths for the backward passes on the paper's slab sizes: with the paper widths
#: one forward/backward pass takes about 4 s (7×96×96) and 12 s (12×128×128) on a CPU core,
#: mostly the last refine unit's 128→128 3×3×3 convolution over every voxel of the slab.
NARROW = {"widths": (8, 8, 16, 16), "refine_channels": 8}
TINY = {"widths": (4, 4, 4, 4), "refine_channels": 4}


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k**3 + cout


def _expected_count(in_channels: int, num_classes: int, widths=(32, 64, 128, 256), r=128) -> int:
    bn = 2  # scale and shift per channel
    count = _conv(in_channels, widths[0], 3) + _conv(widths[0], widths[0], 3) + 2 * bn * widths[0]
    for finer, width in zip(widths, widths[1:]):
        count += _conv(finer, width, 3) + 4 * _conv(width, width, 3) + 5 * bn * width
    count += sum(_conv(w, r, 1) for w in widths)  # adaptive layers
    count += (len(widths) - 1) * (_conv(r, r, 1) + _conv(r, r, 3) + 2 * bn * r)  # refine units
    return count + _conv(r, num_classes, 1)


@pytest.mark.parametrize(
    "in_channels,num_classes,documented", [(4, 5, 11_930_117), (2, 2, 11_928_002)]
)
def test_paper_network_has_about_12m_parameters(in_channels, num_classes, documented):
    model = BrainSegNet(in_channels, num_classes)
    count = param_count(model)
    assert count == _expected_count(in_channels, num_classes) == documented
    assert 11.5e6 < count < 12.5e6  # the paper's "12 M"
    # Keras would also count the batch norms' running mean and variance
    bn_channels = 2 * 32 + 5 * (64 + 128 + 256) + 3 * 2 * 128
    assert param_count(model, keras=True) == count + 2 * bn_channels
    # 17 3×3×3 convolutions in the encoder, 3 more in the refine units
    encoder = [m for m in model.blocks.modules() if isinstance(m, nn.Conv3d)]
    assert len(encoder) == 17 and all(m.kernel_size == (3, 3, 3) for m in encoder)
    assert [m.stride for m in encoder if m.stride != (1, 1, 1)] == [(2, 2, 1)] * 3


def test_paper_widths_forward_backward_on_a_small_slab():
    model = BrainSegNet(4, 5).train()
    x = torch.randn(2, 4, 16, 8, 3)
    out = model(x)
    assert out.shape == (2, 5, 16, 8, 3)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_paper_network_forward_backward_on_the_isles_slab():
    """The paper's widths on its 7×96×96 ISLES slab (the BRATS slab is the benchmark's)."""
    torch.manual_seed(0)
    model = BrainSegNet(2, 2).train()
    out = model(torch.randn(1, 2, 96, 96, 7))
    assert out.shape == (1, 2, 96, 96, 7)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "in_channels,num_classes,slab", [(4, 5, (128, 128, 12)), (2, 2, (96, 96, 7))]
)
def test_forward_backward_on_the_paper_slab_sizes(in_channels, num_classes, slab):
    torch.manual_seed(0)
    model = BrainSegNet(in_channels, num_classes, **NARROW).train()
    x = torch.randn(1, in_channels, *slab)
    out = model(x)
    assert out.shape == (1, num_classes, *slab)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("slices", [1, 3, 7])
@pytest.mark.parametrize("x_size,y_size", [(8, 16), (16, 8), (24, 40), (40, 24)])
def test_output_size_equals_input_size(x_size, y_size, slices):
    model = BrainSegNet(2, 3, **TINY).eval()
    assert model.geometry.size_multiple == (8, 8, 1)
    assert model.geometry.context == (1, 1, 1)
    with torch.no_grad():
        out = model(torch.randn(1, 2, x_size, y_size, slices))
    assert out.shape == (1, 3, x_size, y_size, slices)


@pytest.mark.parametrize("shape", [(12, 16, 4), (16, 20, 4), (8, 9, 1)])
def test_in_plane_size_not_a_multiple_of_8_is_refused(shape):
    model = BrainSegNet(2, 2, **TINY).eval()
    with pytest.raises(ValueError, match=r"multiple of \(8, 8, 1\)"):
        model(torch.randn(1, 2, *shape))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 3, 16, 16, 4))


def _permute_kernels(state: dict) -> dict:
    """Weights for slice_axis 0 from those for slice_axis 2: kernel axes (x, y, z) → (z, x, y)."""
    return {k: v.permute(0, 1, 4, 2, 3) if v.dim() == 5 else v for k, v in state.items()}


def test_slice_axis_0_samples_axes_1_and_2_and_equals_the_permuted_network():
    torch.manual_seed(0)
    axial = BrainSegNet(2, 2, **TINY).double().eval()
    first = BrainSegNet(2, 2, slice_axis=0, **TINY).double().eval()
    assert first.geometry.size_multiple == (1, 8, 8)
    strides = {m.stride for m in first.modules() if isinstance(m, nn.Conv3d)}
    assert strides == {(1, 1, 1), (1, 2, 2)}
    # BN running statistics as if trained, so that eval mode is not the identity
    for module in axial.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    first.load_state_dict(_permute_kernels(axial.state_dict()))
    x = torch.randn(2, 2, 16, 24, 5, dtype=torch.float64)  # (N, C, X, Y, Z), slices on Z
    with torch.no_grad():
        expected = axial(x).permute(0, 1, 4, 2, 3)
        out = first(x.permute(0, 1, 4, 2, 3))  # (N, C, Z, X, Y), slices on axis 0
    assert out.shape == (2, 2, 5, 16, 24)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="multiple"):
        first(torch.randn(1, 2, 16, 5, 16, dtype=torch.float64))


def test_refine_unit_1x1_before_nearest_upsampling_equals_after():
    """The module docstring's claim: with nearest up-sampling the order does not matter."""
    torch.manual_seed(0)
    unit = RefineUnit(6).double().train()
    coarse = torch.randn(2, 6, 4, 4, 3, dtype=torch.float64)
    fine = torch.randn(2, 6, 8, 8, 3, dtype=torch.float64)
    out = unit(coarse, fine)
    up_first = F.interpolate(coarse, size=fine.shape[2:], mode="nearest")
    reference = unit.after(unit.before(up_first) + fine)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-10)
    assert out.shape == fine.shape


def test_options_are_checked_and_registered():
    assert "brainsegnet" in MODELS.names()
    model = build_model(ModelSpec("brainsegnet", dict(TINY)), 4, 5, seed=0)
    assert isinstance(model, BrainSegNet) and model.geometry.output_activation == "softmax"
    assert model.geometry.spatial_dims == 3 and model.geometry.num_classes == 5
    three = BrainSegNet(2, 2, widths=(4, 4, 4), refine_channels=4, upsample="trilinear").eval()
    assert three.geometry.size_multiple == (4, 4, 1)
    with torch.no_grad():
        assert three(torch.randn(1, 2, 12, 4, 2)).shape == (1, 2, 12, 4, 2)
    with pytest.raises(ValueError, match="slice_axis"):
        BrainSegNet(2, 2, slice_axis=3)
    with pytest.raises(ValueError, match="upsample"):
        BrainSegNet(2, 2, upsample="cubic")
    with pytest.raises(ValueError, match="two blocks"):
        BrainSegNet(2, 2, widths=(8,))


def test_a_few_adam_steps_on_a_bright_blob_reduce_the_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2, 2, 16, 16, 4)).astype(np.float32)
    y = np.zeros((2, 16, 16, 4), np.int64)
    y[0, 3:9, 5:11, 1:3] = 1
    y[1, 8:14, 2:8, 0:3] = 1
    x[:, 0][y == 1] += 2.5
    model = build_model(
        ModelSpec("brainsegnet", {"widths": [4, 8, 8, 8], "refine_channels": 8}), 2, 2, seed=0
    )
    losses = adam_losses(model, x, y, steps=20, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]
