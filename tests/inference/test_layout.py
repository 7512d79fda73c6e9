"""The memory layout of prediction: both layouts agree, ``auto`` takes the faster, once."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from lesionseg.inference import layout as layouts
from lesionseg.inference.layout import (
    LayoutChooser,
    forget_measurements,
    layout_probe,
    measured_choice,
    set_layout,
)


class Mixed(nn.Module):
    """A 2D network with a 3D branch (as D-UNet): 4D and 5D weights in one module."""

    def __init__(self):
        super().__init__()
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv3 = nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv3(x[:, None]).mean(1)
        return self.conv2(x) + y.mean(1, keepdim=True)


def test_set_layout_gives_each_tensor_its_own_format():
    net = Mixed()
    set_layout(net, True)
    assert net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert net.conv3.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 3, 8, 8)
    out = net(x.contiguous(memory_format=torch.channels_last))
    set_layout(net, False)
    assert net.conv2.weight.is_contiguous() and net.conv3.weight.is_contiguous()
    torch.testing.assert_close(net(x), out, rtol=1e-5, atol=1e-5)


def test_auto_keeps_the_faster_layout_and_remembers_it(monkeypatch):
    forget_measurements()
    net = nn.Conv3d(3, 2, 3, padding=1)  # 3 channels: the two layouts differ in strides
    x = torch.randn(1, 3, 8, 8, 8)
    # A clock in which the channels-last pass (the second timed one) is the slow one.
    ticks = itertools.chain([0.0, 1.0, 10.0, 15.0])
    chooser = LayoutChooser(net, net, "auto", torch.device("cpu"), False, clock=lambda: next(ticks))
    calls = []

    def forward(t):
        calls.append(t.is_contiguous())
        return net(t)

    chooser.run(forward, x)
    assert chooser.channels_last is False  # 1 s contiguous against 5 s channels-last
    assert calls == [True, False]  # one timed pass of each
    assert measured_choice(net, ((1, 3, 8, 8, 8), False, "cpu")) is False
    again = LayoutChooser(net, net, "auto", torch.device("cpu"), False, clock=lambda: 1 / 0)
    calls.clear()
    again.run(forward, x)  # remembered: no clock, a single pass
    assert calls == [True]
    twin = nn.Conv3d(3, 2, 3, padding=1)  # the same architecture, loaded again
    assert measured_choice(twin, ((1, 3, 8, 8, 8), False, "cpu")) is False
    assert measured_choice(nn.Conv3d(3, 4, 3), ((1, 3, 8, 8, 8), False, "cpu")) is None


def test_a_fixed_layout_is_not_measured():
    net = nn.Conv2d(1, 1, 1)
    chooser = LayoutChooser(net, net, "channels_last", torch.device("cpu"), False, clock=None)
    out = chooser.run(net, torch.randn(1, 1, 4, 4))
    assert out.shape == (1, 1, 4, 4) and chooser.channels_last is True
    with pytest.raises(ValueError, match="layout must be one of"):
        LayoutChooser(net, net, "nhwc", torch.device("cpu"), False)


def test_layouts_module_names_the_choices():
    assert layouts.LAYOUTS == ("auto", "channels_last", "contiguous")


def test_a_network_predicted_in_inference_mode_can_still_be_trained():
    """Validation predicts mid-training: the converted weights must stay trainable."""
    net = nn.Conv3d(3, 2, 3, padding=1)
    chooser = LayoutChooser(net, net, "channels_last", torch.device("cpu"), False)
    with torch.inference_mode():
        chooser.run(net, torch.randn(1, 3, 6, 6, 6))
    chooser.restore()
    assert not any(p.is_inference() for p in net.parameters())
    net(torch.randn(1, 3, 6, 6, 6)).sum().backward()
    assert net.weight.grad is not None


def test_prediction_puts_a_channels_last_network_back_as_it_was():
    """A network trained channels-last (train.layout) stays so after validation."""
    from lesionseg.inference.layout import is_channels_last

    net = nn.Conv3d(3, 2, 3, padding=1)
    set_layout(net, True)
    chooser = LayoutChooser(net, net, "contiguous", torch.device("cpu"), False)
    chooser.run(net, torch.randn(1, 3, 6, 6, 6))
    assert not is_channels_last(net)
    chooser.restore()
    assert is_channels_last(net)


def test_measuring_draws_the_random_numbers_of_one_pass():
    """MC dropout: a run that measures gives what a run with a remembered choice gives."""
    forget_measurements()
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.Dropout(0.5)).train()
    x = torch.randn(1, 3, 6, 6, 6)

    def run_once():
        torch.manual_seed(7)
        chooser = LayoutChooser(net, net, "auto", torch.device("cpu"), False)
        first = chooser.run(net, x)
        return first, torch.rand(1)  # the stream after the pass

    measured, after_measured = run_once()
    remembered, after_remembered = run_once()  # no measurement this time
    torch.testing.assert_close(measured, remembered, rtol=1e-5, atol=1e-6)
    assert torch.equal(after_measured, after_remembered)


def test_the_probe_is_a_smaller_input_the_network_accepts():
    from lesionseg.models.builder import ModelSpec, build_model

    spec = ModelSpec("deepmedic", {"widths": [4, 4, 4, 4], "hidden": [8], "subsample_factors": [3]})
    model = build_model(spec, 2, 2, seed=0).eval()
    geometry = model.geometry
    tile = torch.randn(1, 2, *geometry.input_size((24, 18, 24)))
    small = layout_probe(geometry)(tile)
    assert small.numel() < 0.6 * tile.numel()
    with torch.no_grad():
        out = model(small)  # a size the network accepts
    assert all(o % m == 0 for o, m in zip(out.shape[2:], geometry.size_multiple))
    batch = torch.randn(8, 2, 9, 9, 9)
    assert layout_probe(geometry)(batch).shape[0] == 2  # a quarter of the examples


def test_measuring_on_a_probe_gives_the_batch_its_own_pass():
    forget_measurements()
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.Dropout(0.5)).train()
    x = torch.randn(1, 3, 8, 8, 8)
    probes = []

    def probe(t):
        probes.append(tuple(t.shape))
        return t[..., :4, :4, :4]

    def run_once(**kwargs):
        torch.manual_seed(3)
        chooser = LayoutChooser(net, net, "auto", torch.device("cpu"), False, **kwargs)
        return chooser.run(net, x), torch.rand(1)

    measured, after_measured = run_once(probe=probe)
    assert probes == [(1, 3, 8, 8, 8)]
    remembered, after_remembered = run_once()  # remembered: no probe, no measurement
    assert measured.shape == x.shape[:1] + (4,) + x.shape[2:]
    torch.testing.assert_close(measured, remembered, rtol=1e-5, atol=1e-6)
    assert torch.equal(after_measured, after_remembered)
