"""EDD Net: unpooling with the pooling indices, parameter count, outputs, gradients, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lesionseg.losses.spec import build_loss
from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.models.edd import ConvBNReLU, DeconvNetBranch, EDDNet

TINY = {"widths": (4, 4, 8), "refine_width": 4}


def test_unpooling_restores_the_pooled_maxima_in_place_and_zeros_elsewhere():
    branch = DeconvNetBranch(1, 2, widths=(2, 2, 2))
    x = torch.tensor(
        [
            [1.0, 3.0, 0.0, 0.0],  # window (0, 0): one maximum, 3 at (0, 1)
            [2.0, 0.0, 0.0, 0.0],  # window (0, 1): all zero, four ties
            [5.0, 5.0, 7.0, -1.0],  # window (1, 0): 5 three times
            [5.0, 4.0, 2.0, 7.0],  # window (1, 1): 7 at (2, 2) and (3, 3)
        ]
    ).view(1, 1, 4, 4)
    pooled, indices = branch.pool1(x)
    assert pooled.view(2, 2).tolist() == [[3.0, 0.0], [5.0, 7.0]]
    # Ties keep the first maximum in row-major order (PyTorch compares with a strict >, as
    # Caffe's pooling does): flat indices 1, 2 (top-left of the zero window), 8 and 10.
    assert indices.view(2, 2).tolist() == [[1, 2], [8, 10]]
    expected_pooled, expected_indices = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(pooled, expected_pooled) and torch.equal(indices, expected_indices)

    restored = branch.unpool1(pooled, indices, output_size=x.shape[2:])
    by_hand = torch.zeros(4, 4)
    by_hand[0, 1], by_hand[2, 0], by_hand[2, 2] = 3.0, 5.0, 7.0  # [0, 2] gets the window's 0
    assert torch.equal(restored.view(4, 4), by_hand)
    # The decoder unpools other values than the pooled ones: they go to the same positions.
    values = torch.tensor([[10.0, 20.0], [30.0, 40.0]]).view(1, 1, 2, 2)
    placed = branch.unpool1(values, indices, output_size=x.shape[2:]).view(4, 4)
    assert torch.equal(placed, F.max_unpool2d(values, indices, 2, output_size=(4, 4)).view(4, 4))
    assert placed.flatten().nonzero().flatten().tolist() == [1, 2, 8, 10]
    assert placed.flatten()[[1, 2, 8, 10]].tolist() == [10.0, 20.0, 30.0, 40.0]


def _conv(a: int, b: int, k: int = 3, bias: bool = True) -> int:
    return a * k * k * b + (b if bias else 0)


def _expected_parameters(c: int, k: int, n: int, bias: bool) -> int:
    """Hand count: convolution weights and biases; BN without affine has no parameters."""
    w1, w2, w3 = 32, 64, 128
    encoder = (
        _conv(c, w1, bias=bias)
        + _conv(w1, w1, bias=bias)
        + _conv(w1, w2, bias=bias)
        + 3 * _conv(w2, w2, bias=bias)
        + _conv(w2, w3, bias=bias)
        + 4 * _conv(w3, w3, bias=bias)
    )
    decoder = (
        4 * _conv(w3, w3, bias=bias)
        + _conv(w3, w2, bias=bias)
        + 3 * _conv(w2, w2, bias=bias)
        + _conv(w2, w1, bias=bias)
        + _conv(w1, w1, bias=bias)
        + _conv(w1, k)  # logits: always a bias
    )
    ensemble = _conv(k, k, k=1)
    refine = _conv(c + k, w1, bias=bias) + _conv(w1, w1, bias=bias) + _conv(w1, k)
    return n * (encoder + decoder) + ensemble + refine


def test_paper_configuration_has_about_3_2_million_parameters():
    model = EDDNet(1, 2)
    count = sum(p.numel() for p in model.parameters())
    assert count == _expected_parameters(1, 2, 2, bias=True) == 3_223_212
    no_bias = EDDNet(1, 2, conv_bias=False)
    assert sum(p.numel() for p in no_bias.parameters()) == 3_219_564
    assert _expected_parameters(1, 2, 2, bias=False) == 3_219_564
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 2 * 21 + 2 and all(not m.affine for m in norms)


def test_outputs_are_full_resolution_logits_refined_first():
    torch.manual_seed(0)
    model = EDDNet(1, 2, **TINY, eval_all_outputs=True).eval()
    x = torch.randn(2, 1, 16, 12)
    outputs = model(x)
    assert isinstance(outputs, tuple) and len(outputs) == 4
    assert all(o.shape == (2, 2, 16, 12) for o in outputs)
    branch1, branch2 = (b(x) for b in model.branches)
    torch.testing.assert_close(outputs[2], branch1)
    torch.testing.assert_close(outputs[3], branch2)
    assert not torch.allclose(branch1, branch2)  # separate weights
    ensemble = model.ensemble(torch.relu(branch1 + branch2))
    torch.testing.assert_close(outputs[1], ensemble)
    torch.testing.assert_close(outputs[0], model.refine(torch.cat([x, ensemble], 1)))
    model.eval_all_outputs = False  # the default: prediction gets the refined logits alone
    torch.testing.assert_close(model(x), outputs[0])
    assert len(model.train()(x)) == 4  # training always gets every output
    model.eval()
    assert model.geometry.size_multiple == (4, 4) and model.geometry.slice_context == (0, 0)
    for size in [(18, 16), (16, 14), (2, 4)]:
        with pytest.raises(ValueError, match="multiple of"):
            model(torch.randn(1, 1, *size))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 2, 16, 16))


@pytest.mark.parametrize("branches", [1, 3])
def test_other_branch_counts(branches):
    model = build_model(ModelSpec("edd", {**TINY, "branches": branches}), 2, 3, seed=0)
    outputs = model.train()(torch.randn(2, 2, 8, 8))
    assert len(outputs) == 2 + branches
    assert all(o.shape == (2, 3, 8, 8) for o in outputs)


def _phantom(n: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with one bright square blob each; the blob is the lesion."""
    g = torch.Generator().manual_seed(0)
    image = 0.3 * torch.randn(n, 1, size, size, generator=g)
    target = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(1, size - 6, (2,), generator=g).tolist()
        target[i, r : r + 5, c : c + 5] = 1
    image[:, 0][target > 0] += 2.0
    return image, target


def _summed_ce(outputs, target):
    return sum(F.cross_entropy(o, target) for o in outputs)


def test_every_parameter_gets_a_gradient_and_the_recipe_loss_is_the_plain_sum():
    torch.manual_seed(0)
    model = EDDNet(1, 2, **TINY).train()
    image, target = _phantom()
    outputs = model(image)
    loss = _summed_ce(outputs, target)
    recipe = build_loss(
        {"name": "deep_supervision", "loss": "cross_entropy", "weights": [1, 1, 1, 1]}
    )
    torch.testing.assert_close(recipe(list(outputs), target), loss)
    loss.backward()
    before_norm = {
        f"{name}.0.bias" for name, m in model.named_modules() if isinstance(m, ConvBNReLU)
    }
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name in before_norm:
            # redundant under batch norm (Caffe keeps it): the normalisation cancels it
            assert p.grad.abs().max() < 1e-5, name
        else:
            assert p.grad.abs().sum() > 0, name
    assert len(before_norm) == 2 * 21 + 2


def test_a_few_sgd_steps_on_a_bright_blob_reduce_the_summed_loss():
    torch.manual_seed(0)
    model = EDDNet(1, 2, **TINY).train()
    image, target = _phantom()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        optimiser.zero_grad()
        loss = _summed_ce(model(image), target)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    # and below predicting the lesion prevalence everywhere, in each of the four outputs
    p = target.float().mean()
    baseline = -4 * float(p * p.log() + (1 - p) * (1 - p).log())
    assert losses[-1] < baseline, (losses, baseline)
