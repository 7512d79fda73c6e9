"""``train.precision``: bfloat16 autocast on the CPU for the forward pass, the loss in float32."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.training.trainer import _Step, training_autocast


class Recorder(nn.Module):
    """A small segmentation network that records the dtype of its convolution output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.seen = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append(y.dtype)
        return y


class DtypeLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.CrossEntropyLoss()
        self.seen, self.products = [], []

    def forward(self, logits, target):
        self.seen.append(logits.dtype)
        flat = logits.flatten(1)
        self.products.append((flat @ flat.T).dtype)  # autocast would run this in bfloat16
        return self.inner(logits, target)


def step_for(net, loss, autocast):
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    return _Step(net, net, optimizer, None, loss, [], 0.0, 0.0, None, autocast, torch.device("cpu"))


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_step_autocasts_the_forward_and_keeps_the_loss_in_float32(autocast):
    torch.manual_seed(0)
    net, loss = Recorder(), DtypeLoss()
    step = step_for(net, loss, autocast)
    image = torch.randn(2, 1, 6, 6, 6)
    batch = {"image": image, "target": (image[:, 0] > 0.5).long()}
    losses = [step(batch, "test") for _ in range(15)]
    assert net.seen[0] == (autocast or torch.float32)
    assert set(loss.seen) == {torch.float32}
    assert set(loss.products) == {torch.float32}  # the whole loss in float32, not only its input
    assert losses[-1] < 0.8 * losses[0]  # it still learns
    assert net.conv.weight.dtype == torch.float32  # the weights stay float32


def test_precision_setting_maps_to_an_autocast_dtype(monkeypatch):
    from lesionseg.inference import precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training_autocast({"precision": None, "amp": True}, cpu) is None
    assert training_autocast({"precision": None, "amp": True}, cuda) == torch.float16
    assert training_autocast({"precision": None, "amp": False}, cuda) is None
    assert training_autocast({"precision": "fp32", "amp": True}, cuda) is None
    assert training_autocast({"precision": "bf16", "amp": True}, cpu) == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert training_autocast({"precision": "auto", "amp": True}, cpu) is None
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert training_autocast({"precision": "auto", "amp": True}, cpu) == torch.bfloat16
    with pytest.raises(LesionsegError, match="train.precision"):
        training_autocast({"precision": "fp8", "amp": True}, cpu)


def test_a_bf16_run_trains_end_to_end(toy_dataset, tmp_path):
    from tests.training.conftest import train_single_threaded

    args = ["--epochs", "2", "--set", "train.batches_per_epoch=4", "--set", "train.precision=bf16"]
    out = train_single_threaded("deepmedic-tiny", toy_dataset, tmp_path, args)
    log = (out / "log.csv").read_text().splitlines()
    assert len(log) == 3  # header and two epochs
    assert log[0].endswith(",precision") and all(r.endswith(",bf16") for r in log[1:])
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["stages"][0]["precision"] == "bf16"


def test_a_channels_last_run_trains_and_saves_plain_weights(toy_dataset, tmp_path):
    from safetensors.torch import load_file

    from tests.training.conftest import train_single_threaded

    args = ["--epochs", "1", "--set", "train.batches_per_epoch=3"]
    plain = train_single_threaded("deepmedic-tiny", toy_dataset, tmp_path / "a", args)
    last = train_single_threaded(
        "deepmedic-tiny",
        toy_dataset,
        tmp_path / "b",
        [*args, "--set", "train.layout=channels_last"],
    )
    a, b = (load_file(str(p / "model.safetensors")) for p in (plain, last))
    assert a.keys() == b.keys()
    assert all(t.is_contiguous() for t in b.values())
    rows = [(p / "log.csv").read_text().splitlines()[1].split(",") for p in (plain, last)]
    assert float(rows[0][4]) == pytest.approx(float(rows[1][4]), rel=1e-3)  # the loss
    # the same training in another layout sums in another order; an Adam step moves a
    # weight by about lr whatever the gradient's size, so where a gradient is near zero
    # (DeepMedic's input biases before batch norm: ~1e-8, rounding noise) the two runs
    # may step in opposite directions: at most 2 lr apart per step (3 steps)
    lr = float(rows[0][5])
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=2 * 3 * lr)


class BreaksInBfloat16(nn.Module):
    """A network whose weight gradients are NaN in bfloat16 (the loss stays finite).

    ``0 · √(0 · Σw)`` is 0 forward, but its gradient is ``0 · ∞``: what PyTorch's CPU
    bfloat16 Conv3d does to D-UNet's 3D branch, on demand.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.dtype == torch.bfloat16:
            y = y + 0.0 * torch.sqrt(0.0 * self.conv.weight.sum())
        return y


def _toy_batch():
    image = torch.randn(2, 1, 6, 6, 6)
    return {"image": image, "target": (image[:, 0] > 0.5).long()}


def test_auto_redoes_a_non_finite_bfloat16_step_in_float32_and_stays_there():
    torch.manual_seed(0)
    net = BreaksInBfloat16()
    step = step_for(net, nn.CrossEntropyLoss(), torch.bfloat16)
    step.fallback_to_fp32 = True
    batch = _toy_batch()
    losses = [step(batch, "stages[0]") for _ in range(15)]
    assert step.autocast is None and step.fell_back == "stages[0]"
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert losses[-1] < 0.8 * losses[0]


def test_an_explicit_bfloat16_run_stops_with_a_clear_error_instead_of_diverging():
    torch.manual_seed(0)
    net = BreaksInBfloat16()
    before = net.conv.weight.detach().clone()
    step = step_for(net, nn.CrossEntropyLoss(), torch.bfloat16)
    with pytest.raises(LesionsegError, match=r"stages\[0\].*train.precision"):
        step(_toy_batch(), "stages[0]")
    assert torch.equal(net.conv.weight, before)  # no NaN step was taken


def test_a_finite_bfloat16_step_does_not_fall_back():
    torch.manual_seed(0)
    net = Recorder()
    step = step_for(net, nn.CrossEntropyLoss(), torch.bfloat16)
    step.fallback_to_fp32 = True
    step(_toy_batch(), "stages[0]")
    assert step.autocast == torch.bfloat16 and step.fell_back is None
