"""L1 and L2 penalties on weights (DeepMedic: L1 1e-6, L2 1e-4 on convolution weights only)."""

from __future__ import annotations

import torch
from torch import nn

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def penalised_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights of convolution and fully connected layers (no biases, BN or PReLU slopes)."""
    return [
        m.weight for m in model.modules() if isinstance(m, _WEIGHTED) and m.weight.requires_grad
    ]


def weight_penalty(weights: list[torch.Tensor], l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """``l1·Σ|w| + l2·Σw²`` over ``weights`` (as the official DeepMedic cost, no ½ factor)."""
    total = weights[0].new_zeros(()) if weights else torch.zeros(())
    for w in weights:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.pow(2).sum()
    return total
