import math

import pytest
import torch

from lesionseg.training.optim import OPTIMIZERS, RMSpropNesterov


def _run(opt_kwargs, grads):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = RMSpropNesterov([p], **opt_kwargs)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().tolist()


def test_one_step_by_hand():
    # lr 0.1, rho 0.9, eps 1e-4, mu 0.6, normalised: s = 0.4 * 0.1 * g / sqrt(0.1 g^2 + 1e-4)
    # v1 = -s, theta1 = theta0 + 0.6 * v1 - s = theta0 - 1.6 s
    g = 0.5
    s = 0.4 * 0.1 * g / math.sqrt(0.1 * g * g + 1e-4)
    expected = 1.0 - 1.6 * s
    got = _run(dict(lr=0.1, rho=0.9, eps=1e-4, momentum=0.6), [[0.5, 0.0]])
    assert got[0] == pytest.approx(expected, rel=1e-12)
    assert got[1] == -2.0  # zero gradient: no move


def test_two_steps_by_hand_classic_and_nesterov_unnormalised():
    g1, g2 = 0.5, -0.25
    a1 = 0.1 * g1**2
    s1 = 0.1 * g1 / math.sqrt(a1 + 1e-4)
    a2 = 0.9 * a1 + 0.1 * g2**2
    s2 = 0.1 * g2 / math.sqrt(a2 + 1e-4)
    v1 = -s1
    v2 = 0.6 * v1 - s2
    nesterov = 1.0 + (0.6 * v1 - s1) + (0.6 * v2 - s2)
    classic = 1.0 + v1 + v2
    kw = dict(lr=0.1, rho=0.9, eps=1e-4, momentum=0.6, normalized=False)
    assert _run(kw, [[g1, 0], [g2, 0]])[0] == pytest.approx(nesterov, rel=1e-12)
    assert _run({**kw, "nesterov": False}, [[g1, 0], [g2, 0]])[0] == pytest.approx(
        classic, rel=1e-12
    )


def test_epsilon_is_inside_the_square_root():
    # with a tiny gradient, eps inside the root dominates: step = lr * g / sqrt(eps)
    g = 1e-6
    got = _run(dict(lr=1.0, rho=0.0, eps=1e-4, momentum=0.0, normalized=False), [[g, 0]])
    assert got[0] == pytest.approx(1.0 - g / math.sqrt(g * g + 1e-4), rel=1e-12)


def test_registry_builds_the_usual_optimisers():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(OPTIMIZERS.build("adam", params=params, lr=1e-4), torch.optim.Adam)
    sgd = OPTIMIZERS.build("sgd", params=params, lr=0.05, momentum=0.9)
    assert sgd.param_groups[0]["momentum"] == 0.9
    assert isinstance(OPTIMIZERS.build("rmsprop-nesterov", params=params), RMSpropNesterov)
