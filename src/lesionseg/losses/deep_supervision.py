"""Deep supervision: one loss applied at several output scales, weighted and summed.

As in nnU-Net (``DeepSupervisionWrapper`` and the weights of its trainer): with n
outputs from full to lowest resolution the default weights are 1/2^i, the lowest
resolution's set to 0, normalised to sum 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.losses import LOSSES
from lesionseg.losses.spec import build_loss


def default_weights(n: int) -> list[float]:
    """nnU-Net's scale weights for ``n`` outputs (full resolution first)."""
    weights = [1 / 2**i for i in range(n)]
    if n > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def resize_target(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``target`` brought to ``output``'s spatial size by nearest-neighbour sampling.

    ``target`` is (N, *spatial) labels or (N, C, *spatial) maps; the dtype is kept.
    """
    size = output.shape[2:]
    has_channels = target.dim() == output.dim()
    if tuple(target.shape[-len(size) :]) == tuple(size):
        return target
    batched = target if has_channels else target.unsqueeze(1)
    resized = F.interpolate(batched.float(), size=size, mode="nearest").to(target.dtype)
    return resized if has_channels else resized[:, 0]


@LOSSES.register("deep_supervision")
class DeepSupervisionLoss(nn.Module):
    """Σᵢ wᵢ · loss(outputᵢ, targetᵢ) over the scales of a deeply supervised network.

    Args:
        loss: The loss at each scale: a recipe entry (``"dice"``, ``{"name": ...}``) or a
            module.
        weights: One weight per scale (full resolution first); default
            :func:`default_weights`.
    """

    def __init__(
        self,
        loss: str | Mapping[str, Any] | nn.Module,
        weights: Sequence[float] | None = None,
    ):
        super().__init__()
        self.loss = build_loss(loss)
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(
        self,
        outputs: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor | Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """The weighted sum, a scalar.

        Args:
            outputs: Logits per scale, full resolution first (a single tensor is
                passed straight to the loss).
            target: One target per scale, or the full-resolution target, resized to
                each scale by nearest-neighbour sampling.
        """
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = self.weights or default_weights(len(outputs))
        if isinstance(target, torch.Tensor):
            targets = [resize_target(target, output) for output in outputs]
        else:
            targets = list(target)
        if not len(weights) == len(outputs) == len(targets):
            raise ValueError(
                f"deep supervision: {len(outputs)} outputs, {len(targets)} targets and "
                f"{len(weights)} weights must agree"
            )
        total = outputs[0].new_zeros(())
        for weight, output, scale_target in zip(weights, outputs, targets):
            if weight:
                total = total + weight * self.loss(output, scale_target)
        return total
