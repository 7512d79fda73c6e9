"""Weighted sum of registered losses, e.g. Dice + cross-entropy, from a recipe.

Recipe form::

    loss:
      name: combined
      terms:
        - {name: dice, weight: 1}
        - {name: cross_entropy, weight: 1}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.losses import LOSSES
from lesionseg.losses.spec import build_loss


@LOSSES.register("combined")
class CombinedLoss(nn.Module):
    """Σ wᵢ · lossᵢ(logits, target).

    Args:
        terms: Each a mapping ``{name, weight (default 1), other options of that loss}``,
            or a ``(module, weight)`` pair.

    Attributes:
        last_terms: Name → detached value of each unweighted term at the last call
            (for logging).
    """

    def __init__(self, terms: Sequence[Mapping[str, Any] | tuple[nn.Module, float]]):
        super().__init__()
        if not terms:
            raise LesionsegError("loss 'combined' needs at least one term")
        losses, weights, names = [], [], []
        for term in terms:
            if isinstance(term, Mapping):
                options = dict(term)
                weight = options.pop("weight", 1.0)
                loss = build_loss(options)
                name = options["name"]
            else:
                loss, weight = term
                name = type(loss).__name__
            losses.append(loss)
            weights.append(float(weight))
            # Repeated names (the same loss with two settings) stay distinguishable.
            names.append(name if name not in names else f"{name}_{len(names)}")
        self.losses = nn.ModuleList(losses)
        self.weights = weights
        self.names = names
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum, a scalar."""
        total = logits.new_zeros(())
        terms = {}
        for name, loss, weight in zip(self.names, self.losses, self.weights):
            value = loss(logits, target)
            terms[name] = value.detach()
            total = total + weight * value
        self.last_terms = terms
        return total
