"""Losses against hand-computed values, an independent library, and finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceLoss

from lesionseg.errors import LesionsegError
from lesionseg.losses import LOSSES, build_loss
from lesionseg.losses.deep_supervision import default_weights, resize_target


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# A 2×2 binary case, written out by hand: logits and 0/1 targets.
Z = [0.0, 2.0, -1.0, 0.5]
Y = [1, 0, 0, 1]
BIN_LOGITS = torch.tensor(Z, dtype=torch.float64).view(1, 1, 2, 2)
BIN_TARGET = torch.tensor(Y, dtype=torch.float64).view(1, 2, 2)


def test_binary_cross_entropy_by_hand():
    terms = [-math.log(sigmoid(z)) if y else -math.log(1 - sigmoid(z)) for z, y in zip(Z, Y)]
    expected = sum(terms) / 4
    loss = build_loss("cross_entropy")
    assert float(loss(BIN_LOGITS, BIN_TARGET)) == pytest.approx(expected, rel=1e-12)
    # The target may also carry the channel axis.
    assert float(loss(BIN_LOGITS, BIN_TARGET[:, None])) == pytest.approx(expected, rel=1e-12)
    weighted = build_loss({"name": "cross_entropy", "pos_weight": 3.0})
    expected_w = sum(t * (3 if y else 1) for t, y in zip(terms, Y)) / 4
    assert float(weighted(BIN_LOGITS, BIN_TARGET)) == pytest.approx(expected_w, rel=1e-12)


# Two voxels, three classes.
SOFT_Z = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
SOFT_Y = [0, 2]
SOFT_LOGITS = torch.tensor(SOFT_Z, dtype=torch.float64).T.reshape(1, 3, 1, 2)
SOFT_TARGET = torch.tensor(SOFT_Y).view(1, 1, 2)


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_categorical_cross_entropy_by_hand():
    nll = [-math.log(_softmax(z)[y]) for z, y in zip(SOFT_Z, SOFT_Y)]
    assert float(build_loss("cross_entropy")(SOFT_LOGITS, SOFT_TARGET)) == pytest.approx(
        sum(nll) / 2, rel=1e-12
    )
    weighted = build_loss({"name": "cross_entropy", "weight": [1.0, 1.0, 4.0]})
    expected = (nll[0] * 1 + nll[1] * 4) / (1 + 4)
    assert float(weighted(SOFT_LOGITS, SOFT_TARGET)) == pytest.approx(expected, rel=1e-12)


def test_binary_focal_by_hand():
    gamma, alpha = 2.0, 0.25
    expected = 0.0
    for z, y in zip(Z, Y):
        p_t = sigmoid(z) if y else 1 - sigmoid(z)
        a_t = alpha if y else 1 - alpha
        expected += -a_t * (1 - p_t) ** gamma * math.log(p_t)
    loss = build_loss({"name": "focal", "gamma": gamma, "alpha": alpha})
    assert float(loss(BIN_LOGITS, BIN_TARGET)) == pytest.approx(expected / 4, rel=1e-12)


def test_categorical_focal_by_hand():
    gamma, alpha = 1.5, [0.2, 0.3, 0.5]
    expected = 0.0
    for z, y in zip(SOFT_Z, SOFT_Y):
        p_t = _softmax(z)[y]
        expected += -alpha[y] * (1 - p_t) ** gamma * math.log(p_t)
    loss = build_loss({"name": "focal", "gamma": gamma, "alpha": alpha})
    assert float(loss(SOFT_LOGITS, SOFT_TARGET)) == pytest.approx(expected / 2, rel=1e-12)


@pytest.mark.parametrize("logits, target", [(BIN_LOGITS, BIN_TARGET), (SOFT_LOGITS, SOFT_TARGET)])
def test_focal_without_focusing_is_cross_entropy(logits, target):
    focal = build_loss({"name": "focal", "gamma": 0})
    assert float(focal(logits, target)) == pytest.approx(
        float(build_loss("cross_entropy")(logits, target)), rel=1e-12
    )


def test_focal_stays_finite_on_confident_voxels():
    logits = torch.tensor([40.0, -40.0]).view(1, 1, 2)
    loss = build_loss({"name": "focal", "gamma": 0.5})(
        logits.requires_grad_(), torch.tensor([[1, 0]])
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_binary_dice_by_hand():
    p = [sigmoid(z) for z in Z]
    inter = sum(pi * y for pi, y in zip(p, Y))
    s = 0.5
    plain = 1 - (2 * inter + s) / (sum(p) + sum(Y) + s)
    squared = 1 - (2 * inter + s) / (sum(pi * pi for pi in p) + sum(Y) + s)
    assert float(build_loss({"name": "dice", "smooth": s})(BIN_LOGITS, BIN_TARGET)) == (
        pytest.approx(plain, rel=1e-12)
    )
    loss = build_loss({"name": "dice", "smooth": s, "squared": True})
    assert float(loss(BIN_LOGITS, BIN_TARGET)) == pytest.approx(squared, rel=1e-12)


def test_categorical_dice_by_hand():
    probs = [_softmax(z) for z in SOFT_Z]
    s = 1e-5

    def dice(k):
        p = [pr[k] for pr in probs]
        y = [1.0 if label == k else 0.0 for label in SOFT_Y]
        return (2 * sum(a * b for a, b in zip(p, y)) + s) / (sum(p) + sum(y) + s)

    loss = build_loss("dice")(SOFT_LOGITS, SOFT_TARGET)
    assert float(loss) == pytest.approx(1 - (dice(1) + dice(2)) / 2, rel=1e-10)
    with_bg = build_loss({"name": "dice", "include_background": True})(SOFT_LOGITS, SOFT_TARGET)
    assert float(with_bg) == pytest.approx(1 - (dice(0) + dice(1) + dice(2)) / 3, rel=1e-10)


@pytest.mark.parametrize("batch", [True, False])
def test_dice_matches_monai(batch):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 6, 5, generator=g, dtype=torch.float64)
    target = (torch.rand(3, 1, 6, 5, generator=g) > 0.6).double()
    ours = build_loss({"name": "dice", "smooth": 1e-5, "batch": batch})(logits, target)
    monai = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=batch)(logits, target)
    assert float(ours) == pytest.approx(float(monai), rel=1e-10)

    logits3 = torch.randn(3, 3, 6, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (3, 1, 6, 5), generator=g)
    ours = build_loss({"name": "dice", "batch": batch})(logits3, labels)
    monai = DiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=False,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        batch=batch,
    )(logits3, labels)
    assert float(ours) == pytest.approx(float(monai), rel=1e-10)


def test_enhanced_mixing_by_hand():
    # The last voxel is so confident (p = 1 − 2e-9) that the focal term clips it to 1 − 1e-7.
    z = [0.0, 2.0, -1.0, 0.5, 20.0, -3.0]
    y = [1, 0, 0, 1, 0, 1]
    alpha, gamma, eps = 0.48, 1.1, 1e-7
    p = [sigmoid(v) for v in z]
    dice = (2 * sum(a * b for a, b in zip(p, y)) + 1) / (sum(y) + sum(a * a for a in p) + 1)
    pc = [min(max(v, eps), 1 - eps) for v in p]
    pos = sum(alpha * (1 - v) ** gamma * math.log(v) for v, t in zip(pc, y) if t == 1) / 6
    neg = sum((1 - alpha) * v**gamma * math.log(1 - v) for v, t in zip(pc, y) if t == 0) / 6
    expected = -pos - neg - math.log(dice)

    logits = torch.tensor(z, dtype=torch.float64).view(2, 1, 3)  # a batch of two
    target = torch.tensor(y, dtype=torch.float64).view(2, 3)
    loss = build_loss("enhanced_mixing")(logits, target)
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    # Without the clip the fifth voxel's log(1 − p) would be about −20 rather than −16.1.
    assert abs(math.log(1 - pc[4]) - math.log(1 - p[4])) > 3


def test_enhanced_mixing_two_channels_equals_one_channel():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (2, 4, 4), generator=g)
    loss = build_loss("enhanced_mixing")
    two = torch.cat([torch.zeros_like(z), z], dim=1)  # softmax([0, z])[1] = sigmoid(z)
    assert float(loss(two, labels)) == pytest.approx(float(loss(z, labels.double())), rel=1e-12)
    with pytest.raises(ValueError, match="1 or 2 channels"):
        loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))


def test_combined_is_weighted_sum():
    spec = {
        "name": "combined",
        "terms": [{"name": "dice", "weight": 0.5}, {"name": "cross_entropy", "weight": 2}],
    }
    loss = build_loss(spec)
    value = loss(SOFT_LOGITS, SOFT_TARGET)
    dice = build_loss("dice")(SOFT_LOGITS, SOFT_TARGET)
    ce = build_loss("cross_entropy")(SOFT_LOGITS, SOFT_TARGET)
    assert float(value) == pytest.approx(float(0.5 * dice + 2 * ce), rel=1e-12)
    assert set(loss.last_terms) == {"dice", "cross_entropy"}
    assert float(loss.last_terms["dice"]) == pytest.approx(float(dice))
    twice = build_loss({"name": "combined", "terms": [{"name": "focal"}, {"name": "focal"}]})
    assert twice.names == ["focal", "focal_1"]


def test_deep_supervision_weights_and_target_resizing():
    assert default_weights(1) == [1.0]
    assert default_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 2, (2, 8, 8), generator=g)
    half = torch.randn(2, 2, 4, 4, generator=g)
    assert torch.equal(resize_target(target, half), target[:, ::2, ::2])
    assert torch.equal(resize_target(target[:, None], half), target[:, None, ::2, ::2])

    outputs = [torch.randn(2, 2, 8, 8, generator=g), half, torch.randn(2, 2, 2, 2, generator=g)]
    wrapped = build_loss({"name": "deep_supervision", "loss": "cross_entropy"})
    ce = build_loss("cross_entropy")
    expected = 2 / 3 * ce(outputs[0], target) + 1 / 3 * ce(half, target[:, ::2, ::2])
    assert float(wrapped(outputs, target)) == pytest.approx(float(expected), rel=1e-6)
    targets = [target, target[:, ::2, ::2], target[:, ::4, ::4]]
    custom = build_loss(
        {"name": "deep_supervision", "loss": {"name": "dice"}, "weights": [1, 1, 1]}
    )
    dice = build_loss("dice")
    expected = sum(dice(o, t) for o, t in zip(outputs, targets))
    assert float(custom(outputs, targets)) == pytest.approx(float(expected), rel=1e-6)
    assert float(custom(outputs[0], target)) == pytest.approx(float(dice(outputs[0], target)))
    with pytest.raises(ValueError, match="must agree"):
        custom(outputs[:2], targets[:2])


GRADCHECK_SPECS = [
    "cross_entropy",
    {"name": "focal", "gamma": 2.0, "alpha": 0.3},
    {"name": "focal", "gamma": 1.5},
    "dice",
    {"name": "dice", "squared": True, "batch": False, "smooth": 1.0},
    "enhanced_mixing",
    {"name": "combined", "terms": [{"name": "dice"}, {"name": "focal", "weight": 0.5}]},
]


@pytest.mark.parametrize(
    "spec, channels",
    # The Enhanced Mixing Loss is binary: 1 or 2 channels only.
    [(s, c) for s in GRADCHECK_SPECS for c in (1, 2, 3) if (s, c) != ("enhanced_mixing", 3)],
    ids=str,
)
def test_gradcheck(spec, channels):
    g = torch.Generator().manual_seed(channels)
    # Logits within ±3 keep p away from the EML clip, where the gradient is cut by design.
    logits = torch.rand(2, channels, 3, 4, generator=g, dtype=torch.float64) * 6 - 3
    if channels == 1:
        target = (torch.rand(2, 3, 4, generator=g) > 0.5).double()
    else:
        target = torch.randint(0, channels, (2, 3, 4), generator=g)
    loss = build_loss(spec)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits.requires_grad_(),))


def test_registry_and_spec_errors():
    assert {"cross_entropy", "focal", "dice", "enhanced_mixing", "combined"} <= set(LOSSES)
    assert "deep_supervision" in LOSSES
    with pytest.raises(LesionsegError, match="did you mean"):
        build_loss("dise")
    with pytest.raises(LesionsegError, match="needs a 'name'"):
        build_loss({"gamma": 2})
    with pytest.raises(LesionsegError, match="focal"):
        build_loss({"name": "focal", "gama": 2})
    with pytest.raises(LesionsegError, match="at least one term"):
        build_loss({"name": "combined", "terms": []})


def test_target_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="does not fit"):
        build_loss("dice")(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 5))
