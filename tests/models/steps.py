"""A few optimiser steps on a tiny data set: the model tests' "it learns" check."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def adam_losses(model, x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> list[float]:
    """Cross-entropy before each of ``steps`` Adam steps on ``(x, y)``; every step checks
    that each parameter got a gradient."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(xt), yt)
        optimiser.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses
