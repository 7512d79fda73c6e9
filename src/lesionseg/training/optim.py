"""Optimisers looked up by name in :data:`OPTIMIZERS`, including DeepMedic's RMSProp + Nesterov.

PyTorch's ``RMSprop`` has no Nesterov momentum and puts ε outside the square
root; DeepMedic (SPECS.md §1, official code ``RmsPropOptimizer``) uses, per
parameter θ with gradient g, mean square a and velocity v::

    a ← ρ·a + (1 − ρ)·g²
    s = m·η·g / √(a + ε)          m = 1 − μ if momentum is normalised, else 1
    v ← μ·v − s
    θ ← θ + μ·v − s               (Nesterov; classic momentum: θ ← θ + v)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lesionseg.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


class RMSpropNesterov(torch.optim.Optimizer):
    """RMSProp with (Nesterov) momentum and ε inside the square root, as in DeepMedic.

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate η (paper 1e-3).
        rho: Decay ρ of the mean square gradient (0.9).
        eps: ε added to the mean square before the square root (1e-4).
        momentum: Momentum μ (0.6).
        nesterov: Nesterov momentum (True) or classic momentum.
        normalized: Scale the gradient step by 1 − μ (the official code's default,
            ``momNonNorm0orNormalized1 = 1``), so that μ changes smoothing, not step size.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        rho: float = 0.9,
        eps: float = 1e-4,
        momentum: float = 0.6,
        nesterov: bool = True,
        normalized: bool = True,
    ):
        if lr < 0 or eps < 0 or not 0 <= rho < 1 or not 0 <= momentum < 1:
            raise ValueError(
                f"invalid RMSprop settings lr={lr} rho={rho} eps={eps} momentum={momentum}"
            )
        defaults = dict(
            lr=lr, rho=rho, eps=eps, momentum=momentum, nesterov=nesterov, normalized=normalized
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, eps, mu = group["lr"], group["rho"], group["eps"], group["momentum"]
            scale = (1.0 - mu) if group["normalized"] else 1.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                    state["velocity"] = torch.zeros_like(p)
                square_avg, velocity = state["square_avg"], state["velocity"]
                square_avg.mul_(rho).addcmul_(grad, grad, value=1.0 - rho)
                step = grad / (square_avg + eps).sqrt() * (scale * lr)
                velocity.mul_(mu).sub_(step)
                if group["nesterov"]:
                    p.add_(velocity, alpha=mu).sub_(step)
                else:
                    p.add_(velocity)
        return loss


def _sgd(
    params,
    lr: float = 0.01,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
):
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
    )


def _adam(
    params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0
):
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def _adamw(
    params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01
):
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def _adadelta(params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6):
    return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps)


OPTIMIZERS.register("rmsprop-nesterov")(RMSpropNesterov)
OPTIMIZERS.register("sgd")(_sgd)
OPTIMIZERS.register("adam")(_adam)
OPTIMIZERS.register("adamw")(_adamw)
OPTIMIZERS.register("adadelta")(_adadelta)


def build_optimizer(spec: dict[str, Any], params: Iterable) -> torch.optim.Optimizer:
    """Build the optimiser a recipe names: ``{name: adam, lr: 1e-4, ...}``."""
    options = {k: v for k, v in spec.items() if k != "name"}
    return OPTIMIZERS.build(spec["name"], params=params, **options)
