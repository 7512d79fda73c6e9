"""U-Net baselines and D-UNet: parameter counts of the paper, shapes, gradients, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.losses import build_loss
from lesionseg.models import MODELS
from lesionseg.models.blocks import SqueezeExcitation, UpConv
from lesionseg.models.counting import param_breakdown, param_count
from lesionseg.models.dunet import parse_variant

TINY = (4, 8, 16, 32, 64)


# --- parameter counts (paper Tables 2 and 5; Keras counts BN running mean/var) ---------


@pytest.mark.parametrize(
    "name, options, keras, pytorch",
    [
        ("dunet", {}, 8_640_163, 8_633_379),
        ("unet2d-transform", {}, 7_771_297, 7_765_409),
        ("unet2d-original", {}, 31_030_593, 31_030_593),
        ("unet3d-transform", {}, 22_597_826, 22_591_810),
    ],
)
def test_paper_parameter_counts(name, options, keras, pytorch):
    model = MODELS.build(name, **options)
    assert param_count(model, keras=True) == keras
    assert param_count(model) == pytorch


@pytest.mark.parametrize(
    "variant, keras",
    [
        ("Add-1", 7_802_210),
        ("Add-12", 7_970_019),
        ("Add-23", 8_635_043),
        ("Add-123", 8_636_260),
        ("SEAdd-12", 7_971_299),
        ("SEAdd-23", 8_640_163),
    ],
)
def test_table5_variant_counts(variant, keras):
    assert param_count(MODELS.build("dunet", variant=variant), keras=True) == keras


def test_table5_seadd123_count_needs_se_ratio_8():
    # The printed 8,647,012 is SEAdd-123 with SE ratio 8; ratio 16 gives 5,376 fewer.
    assert param_count(MODELS.build("dunet", variant="SEAdd-123", se_ratio=8), keras=True) == (
        8_647_012
    )
    assert param_count(MODELS.build("dunet", variant="SEAdd-123"), keras=True) == 8_641_636


def test_param_count_against_hand_count():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 1, 1, bias=False))
    model[2].weight.requires_grad_(False)
    # conv 9·2 + 2, BN γ, β (2 + 2), conv 2 (frozen); Keras adds running mean and var (2 + 2).
    assert param_count(model) == 26
    assert param_count(model, keras=True) == 30
    assert param_count(model, trainable_only=True) == 24
    assert param_breakdown(model, keras=True) == {"0": 20, "1": 8, "2": 2}


def test_batch_norm_uses_keras_defaults():
    model = MODELS.build("dunet", features=TINY)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == pytest.approx(0.01) for m in norms)
    assert all(m.eps == pytest.approx(1e-3) for m in norms)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in MODELS.build("unet2d-original").modules())


# --- shapes and geometry ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, channels",
    [
        ("dunet", {"features": TINY}, 4),
        ("dunet", {"features": TINY, "num_classes": 2}, 4),
        ("unet3d-transform", {"features": TINY}, 4),
        ("unet2d-transform", {"features": TINY}, 1),
        ("unet2d-transform", {"features": TINY, "slice_context": (2, 1)}, 4),
        ("unet2d-original", {"features": TINY}, 1),
    ],
)
def test_output_shape_192(name, options, channels):
    model = MODELS.build(name, **options).eval()
    assert model.geometry.input_channels_total == channels
    with torch.no_grad():
        out = model(torch.randn(1, channels, 192, 192))
    assert out.shape == (1, model.geometry.num_classes, 192, 192)
    assert torch.isfinite(out).all()


def test_full_width_dunet_forward_192():
    model = MODELS.build("dunet").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 4, 192, 192))
    assert out.shape == (1, 1, 192, 192)


def test_geometry():
    dunet = MODELS.build("dunet", features=TINY)
    g = dunet.geometry
    assert (g.spatial_dims, g.in_channels, g.num_classes) == (2, 1, 1)
    assert g.slice_context == (2, 1) and g.size_multiple == (16, 16)
    assert g.output_activation == "sigmoid"
    assert MODELS.build("unet3d-transform", features=TINY).geometry == g
    g2 = MODELS.build("unet2d-transform", features=TINY, num_classes=3).geometry
    assert g2.slice_context == (0, 0) and g2.output_activation == "softmax"
    g3 = MODELS.build("unet", spatial_dims=3, features=(4, 8, 16), pool_size=(1, 2, 2)).geometry
    assert g3.spatial_dims == 3 and g3.size_multiple == (1, 4, 4)


def test_unet_3d_shape_and_anisotropic_pooling():
    model = MODELS.build(
        "unet",
        spatial_dims=3,
        in_channels=2,
        num_classes=3,
        features=(4, 8, 16),
        pool_size=(1, 2, 2),
    ).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 3, 16, 12))
    assert out.shape == (1, 3, 3, 16, 12)


def test_bad_input_size_is_reported():
    model = MODELS.build("dunet", features=TINY)
    with pytest.raises(ValueError, match="multiple of"):
        model(torch.randn(1, 4, 40, 40))
    with pytest.raises(ValueError, match="must have 4 channels"):
        model(torch.randn(1, 1, 32, 32))


def _capture_fusions(model):
    seen = {}

    def hook(level):
        def record(module, inputs, output):
            seen[level] = ([tuple(t.shape) for t in inputs], tuple(output.shape))

        return record

    for level, block in model.fusions.items():
        block.register_forward_hook(hook(int(level)))
    return seen


def test_dimension_transform_shapes_levels_2_and_3():
    model = MODELS.build("dunet", features=TINY).eval()
    seen = _capture_fusions(model)
    with torch.no_grad():
        model(torch.randn(1, 4, 192, 192))
    assert sorted(seen) == [2, 3]
    # Level 2: 3D features of depth 2 at 96×96; level 3: depth 1 at 48×48.
    assert seen[2] == ([(1, 8, 2, 96, 96), (1, 8, 96, 96)], (1, 8, 96, 96))
    assert seen[3] == ([(1, 16, 1, 48, 48), (1, 16, 48, 48)], (1, 16, 48, 48))
    # The depth planes become the channels of the 3×3 projection.
    assert model.fusions["2"].project.weight.shape == (8, 2, 3, 3)
    assert model.fusions["3"].project.weight.shape == (16, 1, 3, 3)
    assert isinstance(model.fusions["2"].se_3d, SqueezeExcitation)


def test_variants_configure_fusion():
    assert parse_variant("SEAdd-23") == ((2, 3), True)
    assert parse_variant("add-1") == ((1,), False)
    model = MODELS.build("dunet", features=TINY, variant="Add-1")
    assert list(model.fusions) == ["1"] and len(model.encoder_3d) == 1
    assert isinstance(model.fusions["1"].se_2d, nn.Identity)
    assert model.fusions["1"].project.weight.shape[1] == 4  # all four slices at level 1
    with pytest.raises(LesionsegError, match="variant"):
        parse_variant("Concat-2")
    with pytest.raises(LesionsegError, match="fusion levels"):
        MODELS.build("dunet", fusion_levels=(6,))


def test_dunet_without_fusion_is_a_stacked_2d_unet():
    plain = MODELS.build("dunet", fusion_levels=())
    stacked = MODELS.build("unet2d-transform", slice_context=(2, 1))
    assert param_count(plain) == param_count(stacked)


# --- building blocks against hand computations ------------------------------------------


def test_upconv_pads_like_keras_same():
    torch.manual_seed(0)
    up = UpConv(1, 1, scale=2, spatial_dims=2)
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    up = up.double()
    w = up.conv.weight.detach().numpy()[0, 0]
    b = float(up.conv.bias.detach())
    big = np.repeat(np.repeat(x.numpy()[0, 0], 2, 0), 2, 1)
    padded = np.zeros((7, 7))
    padded[:6, :6] = big  # TensorFlow 'same', kernel 2: nothing before, one zero after
    expected = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            expected[i, j] = max(0.0, (w * padded[i : i + 2, j : j + 2]).sum() + b)
    np.testing.assert_allclose(up(x).detach().numpy()[0, 0], expected, atol=1e-12)


def test_upconv_3d_in_plane_scale():
    up = UpConv(3, 2, scale=(1, 2, 2), spatial_dims=3)
    assert up(torch.randn(1, 3, 4, 5, 6)).shape == (1, 2, 4, 10, 12)


def test_squeeze_excitation_against_formula():
    torch.manual_seed(1)
    se = SqueezeExcitation(32, ratio=16).double()
    x = torch.randn(2, 32, 5, 6, dtype=torch.float64)
    w1 = se.squeeze.weight.detach().numpy()
    w2 = se.excite.weight.detach().numpy()
    assert w1.shape == (2, 32) and w2.shape == (32, 2) and se.squeeze.bias is None
    pooled = x.numpy().mean(axis=(2, 3))
    gate = 1 / (1 + np.exp(-(np.maximum(pooled @ w1.T, 0) @ w2.T)))
    np.testing.assert_allclose(se(x).detach().numpy(), x.numpy() * gate[:, :, None, None])


# --- gradients and training ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("dunet", {"variant": "SEAdd-123", "se_ratio": 2}),
        ("unet3d-transform", {}),
        ("unet2d-transform", {"slice_context": (2, 1)}),
        ("unet2d-original", {}),
    ],
)
def test_gradients_reach_every_parameter(name, options):
    torch.manual_seed(0)
    # 16 maps at level 1: the 3D U-Net's ReLU after its one-map reduction is dead at
    # initialisation if all of them get a negative weight (likely with 4 maps, 2^-16 with 16).
    model = MODELS.build(name, features=(16, 16, 32), dropout=0.0, **options).train()
    x = torch.randn(2, 4 if name != "unet2d-original" else 1, 16, 16)
    out = model(x)
    loss = build_loss("dice")(out, (torch.rand(2, 16, 16) > 0.7).float()) + out.pow(2).mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def _disc_phantom(n: int, size: int, seed: int):
    """4-slice stacks of a bright ball in noise; the target is the disc in slice index 2."""
    rng = np.random.default_rng(seed)
    z, yy, xx = np.meshgrid(np.arange(4), np.arange(size), np.arange(size), indexing="ij")
    images, targets = [], []
    for _ in range(n):
        cy, cx = rng.uniform(8, size - 8, 2)
        r = rng.uniform(3, 6)
        ball = (yy - cy) ** 2 + (xx - cx) ** 2 + (3.0 * (z - 2)) ** 2 < r**2
        images.append(ball * 2.0 + rng.normal(0, 0.5, ball.shape))
        targets.append(ball[2])
    return (
        torch.tensor(np.stack(images), dtype=torch.float32),
        torch.tensor(np.stack(targets), dtype=torch.float32),
    )


@pytest.mark.parametrize("name", ["dunet", "unet2d-transform", "unet3d-transform"])
def test_few_training_steps_reduce_loss(name):
    torch.manual_seed(0)
    extra = {"dunet": {"se_ratio": 2}, "unet2d-transform": {"slice_context": (2, 1)}}
    model = MODELS.build(name, features=(16, 16, 32), dropout=0.0, **extra.get(name, {}))
    images, targets = _disc_phantom(8, 32, seed=3)
    loss_fn = build_loss("enhanced_mixing")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    # Batch statistics throughout: Keras' BN momentum (0.99) leaves the running
    # averages near their initial values after a few steps.
    def evaluate():
        with torch.no_grad():
            return float(loss_fn(model(images), targets))

    before = evaluate()
    for _ in range(25):
        optimiser.zero_grad()
        loss_fn(model(images), targets).backward()
        optimiser.step()
    after = evaluate()
    assert after < 0.6 * before, (before, after)
