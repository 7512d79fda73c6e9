"""Soft Dice loss: 1 − mean over classes of (2Σpy + s) / (Σp + Σy + s)."""

from __future__ import annotations

import torch
from torch import nn

from lesionseg.losses import LOSSES
from lesionseg.losses._targets import is_binary, one_hot_target, probabilities


@LOSSES.register("dice")
class SoftDiceLoss(nn.Module):
    """Soft Dice loss on probabilities (sigmoid for one channel, softmax for K ≥ 2).

    Inputs follow :mod:`lesionseg.losses._targets`.

    Args:
        smooth: s, added to numerator and denominator (keeps empty targets defined).
        squared: Denominator Σp² + Σy² (V-Net, D-UNet's ``dice_coef``) instead of Σp + Σy.
        batch: Sum over the whole batch (one Dice per class, nnU-Net's "batch Dice");
            otherwise one Dice per sample and class, then the mean.
        include_background: For K ≥ 2, also score class 0. A one-channel output scores
            its single (foreground) map.
    """

    def __init__(
        self,
        smooth: float = 1e-5,
        squared: bool = False,
        batch: bool = True,
        include_background: bool = False,
    ):
        super().__init__()
        self.smooth = float(smooth)
        self.squared = squared
        self.batch = batch
        self.include_background = include_background

    def dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft Dice per scored class (and per sample unless ``batch``)."""
        p = probabilities(logits)
        y = one_hot_target(logits, target)
        if not is_binary(logits) and not self.include_background:
            p, y = p[:, 1:], y[:, 1:]
        dims = (0, *range(2, p.dim())) if self.batch else tuple(range(2, p.dim()))
        intersection = (p * y).sum(dims)
        if self.squared:
            denominator = (p * p).sum(dims) + (y * y).sum(dims)
        else:
            denominator = p.sum(dims) + y.sum(dims)
        return (2 * intersection + self.smooth) / (denominator + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        return 1 - self.dice(logits, target).mean()
