"""DeepMedic: the paper's sizes, parameter count, pathway alignment, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lesionseg.models import MODELS
from lesionseg.models.counting import param_count
from lesionseg.models.deepmedic import DeepMedic, fold_batch_norm, residual_add, upsample_repeat

TINY = dict(widths=[2, 2, 3, 3, 3, 3, 4, 4], hidden=[6, 6])


def tiny(in_channels=1, num_classes=2, **options):
    torch.manual_seed(0)
    return DeepMedic(in_channels, num_classes, **{**TINY, **options})


def randomise_bn(model):
    """Non-trivial running statistics and affine parameters, so eval mode is not identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))


def test_paper_parameter_count():
    model = MODELS.build("deepmedic", in_channels=4, num_classes=5)
    # Derived in SPECS.md: conv weights 660,330 + BN/PReLU 2,820 + input biases 8 + classifier 5.
    assert param_count(model) == 663_163
    assert param_count(model, keras=True) == 663_163 + 2 * 940  # + BN running mean/var
    # Residual connections add no parameters.
    assert param_count(DeepMedic(4, 5, residual=True)) == 663_163


def test_paper_geometry_and_sizes():
    model = DeepMedic(4, 5).eval()
    g = model.geometry
    assert model.receptive_fields() == {"normal": 17, "subsampled_x3": 51}
    assert g.context == (49, 49, 49) and g.size_multiple == (3, 3, 3)
    # The paper's training segment: 25³ normal, 19³ low resolution, output 9³.
    assert model.pathway_input_sizes((9, 9, 9)) == {"normal": (25,) * 3, "subsampled_x3": (19,) * 3}
    assert g.input_size((9, 9, 9)) == (57, 57, 57)
    with torch.no_grad():
        assert model(torch.zeros(1, 4, 57, 57, 57)).shape == (1, 5, 9, 9, 9)
    # The paper's inference segment 45³ → 29³ (normal pathway) and its 26³ low-res input.
    assert model.pathway_input_sizes((29,) * 3) == {"normal": (45,) * 3, "subsampled_x3": (26,) * 3}
    with torch.no_grad():
        assert model.normal(torch.zeros(1, 4, 45, 45, 45)).shape == (1, 50, 29, 29, 29)
    # The whole network needs outputs that are multiples of 3 (29 → 30).
    assert g.input_size((29, 29, 29)) == (78, 78, 78)
    assert g.output_size((78, 78, 78)) == (30, 30, 30)
    with pytest.raises(ValueError, match="multiple of 3"):
        model(torch.zeros(1, 4, 77, 77, 77))


def test_normal_pathway_receptive_field_is_17():
    model = tiny().double().eval()
    x = torch.randn(1, 1, 25, 25, 25, dtype=torch.float64, requires_grad=True)
    model.normal(x)[0, :, 4, 4, 4].sum().backward()
    support = np.argwhere(x.grad[0, 0].numpy() != 0)
    assert support.min(0).tolist() == [4, 4, 4] and support.max(0).tolist() == [20, 20, 20]
    assert len(support) == 17**3


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_low_resolution_voxel_covers_the_same_position(offset):
    """The gradient of one output voxel: a dense 17³ box centred on the voxel (normal
    pathway) and 17³ samples, 3 apart, centred on the centre of the voxel's 3×3×3 block."""
    model = tiny().double().eval()
    randomise_bn(model)
    size = 57 + 3
    x = torch.randn(1, 1, size, size, size, dtype=torch.float64, requires_grad=True)
    out = model(x)
    assert out.shape[2:] == (12, 12, 12)
    i = 6 + offset  # output voxel; its input position is i + 24
    (out[0, 1, i, i, i] - out[0, 0, i, i, i]).backward()
    grad = x.grad[0, 0].numpy() != 0
    p = i + 24
    box = np.zeros_like(grad)
    box[p - 8 : p + 9, p - 8 : p + 9, p - 8 : p + 9] = True
    assert grad[box].all()  # the normal pathway sees the whole 17³ box
    outside = np.argwhere(grad & ~box)
    centre = 3 * (p // 3) + 1  # centre of the voxel's block
    lowres = np.zeros_like(grad)
    sl = slice(centre - 24, centre + 25, 3)
    lowres[sl, sl, sl] = True
    assert lowres.sum() == 17**3
    assert grad[lowres].all()
    # Nothing else: the remaining support is exactly the strided samples.
    assert set(map(tuple, outside)) <= set(map(tuple, np.argwhere(lowres)))
    assert abs(centre - p) <= 1


def test_impulse_footprint_is_51_cubed_at_block_centres_17_cubed_elsewhere():
    model = tiny().double().eval()
    randomise_bn(model)
    size = 60 + 48
    x = torch.zeros(1, 1, size, size, size, dtype=torch.float64)
    with torch.no_grad():
        base = model(x)
        for position, side in ((52, 51), (51, 17)):  # block centre / block edge
            assert (position % 3 == 1) == (side == 51)
            y = x.clone()
            y[0, 0, position, position, position] = 50.0
            changed = (model(y) - base).abs().amax(1)[0] > 0
            idx = np.argwhere(changed.numpy())
            extent = idx.max(0) - idx.min(0) + 1
            assert extent.tolist() == [side] * 3
            assert changed.sum().item() == side**3


def test_upsample_repeat_and_residual_add():
    x = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    up = upsample_repeat(x, 3)
    assert up.shape == (1, 1, 6, 6, 6)
    assert torch.equal(up[0, 0, 4, 1, 5], x[0, 0, 1, 0, 1])
    deeper = torch.ones(1, 3, 2, 2, 2)
    earlier = torch.arange(2 * 4**3, dtype=torch.float32).reshape(1, 2, 4, 4, 4)
    out = residual_add(deeper, earlier)
    assert torch.equal(out[:, :2], 1 + earlier[:, :, 1:3, 1:3, 1:3])
    assert torch.equal(out[:, 2], deeper[:, 2])  # zero-padded channel


def test_residual_and_two_subsampled_pathways():
    model = tiny(subsample_factors=[3, 5], residual=True).eval()
    assert model.normal.residual_layers == (4, 6, 8)
    g = model.geometry
    # Margin: a multiple of 15 holding 8 blocks of 5 voxels → 45.
    assert g.context == (91,) * 3 and g.size_multiple == (15,) * 3
    assert model.receptive_fields()["subsampled_x5"] == 85
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 105, 105, 105)).shape == (1, 2, 15, 15, 15)
    plain = tiny(subsample_factors=[3, 5]).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 1, 105, 105, 105)
    with torch.no_grad():
        assert not torch.allclose(model(x), plain(x))


def test_options_and_initialisation():
    model = DeepMedic(4, 5, conv_dropout=0.02)
    assert [layer.drop.p if layer.drop else 0.0 for layer in model.head] == [0.0, 0.5, 0.5]
    assert all(layer.drop.p == 0.02 for layer in model.normal.layers)
    assert model.head[-1].conv.bias is not None and model.head[0].conv.bias is None
    w = model.normal.layers[5].conv.weight  # 40 → 40, fan_in 1080
    assert abs(w.std().item() - math.sqrt(2 / 1080)) < 0.05 * math.sqrt(2 / 1080)
    prelu = model.normal.layers[3].act.weight
    assert torch.allclose(prelu, torch.full_like(prelu, 0.01))
    single = DeepMedic(1, 2, subsample_factors=[], **TINY)
    assert single.geometry.context == (17, 17, 17) and single.geometry.size_multiple == (1, 1, 1)
    with pytest.raises(ValueError, match="odd"):
        DeepMedic(1, 2, subsample_factors=[2])


def test_gradients_reach_every_parameter():
    model = tiny(in_channels=2, num_classes=3, residual=True).train()
    x = torch.randn(2, 2, 57, 57, 57)
    y = torch.randint(0, 3, (2, 9, 9, 9))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_steps_reduce_loss_on_phantom():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = DeepMedic(1, 2, widths=[4] * 8, hidden=[8, 8], dropout=0.0)
    grid = np.indices((57, 57, 57)).transpose(1, 2, 3, 0)
    images, targets = [], []
    for _ in range(2):
        centre = 28 + rng.integers(-4, 5, size=3)
        lesion = np.linalg.norm(grid - centre, axis=-1) < 5
        images.append(lesion * 2.0 + rng.normal(0, 0.5, lesion.shape))
        targets.append(lesion[24:-24, 24:-24, 24:-24])
    x = torch.tensor(np.stack(images)[:, None], dtype=torch.float32)
    y = torch.tensor(np.stack(targets), dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("options", [{}, {"residual": True}, {"subsample_factors": [3, 5]}])
def test_folded_batch_norm_gives_the_same_output(options):
    model = tiny(in_channels=2, num_classes=3, **options).eval()
    randomise_bn(model)
    with torch.no_grad():
        model.normal.layers[0].input_bias.normal_()
    fused = fold_batch_norm(model)
    kept = sum(isinstance(m, torch.nn.BatchNorm3d) for m in fused.modules())
    assert kept == (7 if options.get("residual") else 0)  # norms after residual sums stay
    n = 2 * model.margin + model.period
    x = torch.randn(1, 2, n, n, n)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=0)
    assert model.normal.layers[1].norm.__class__ is torch.nn.BatchNorm3d  # original untouched


def test_upsample_repeat_keeps_the_channels_last_layout():
    x = torch.randn(2, 5, 3, 4, 2)
    plain = upsample_repeat(x, 3)
    assert plain.shape == (2, 5, 9, 12, 6) and plain.is_contiguous()
    torch.testing.assert_close(plain[:, :, 4, 7, 5], x[:, :, 1, 2, 1])
    fast = upsample_repeat(x.contiguous(memory_format=torch.channels_last_3d), 3)
    assert fast.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(fast, plain)
