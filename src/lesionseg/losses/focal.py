"""Focal loss (Lin et al. 2017): FL = −α_t (1 − p_t)^γ log p_t, averaged over voxels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.losses import LOSSES
from lesionseg.losses._targets import binary_target, is_binary, label_target


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Focal loss on logits; p_t is the probability given to the true class.

    Inputs follow :mod:`lesionseg.losses._targets` (sigmoid for one channel with a
    binary target, softmax for K ≥ 2 with class labels). With γ = 0 and no α it
    equals cross-entropy.

    Args:
        gamma: Focusing exponent γ ≥ 0 (2 by default, as Brain SegNet uses).
        alpha: Class balance α_t. None: 1 for all voxels. A float: α for foreground
            (the positive class, or every class ≥ 1) and 1 − α for background. A
            sequence: one weight per class (K ≥ 2).
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be ≥ 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = alpha if alpha is None or isinstance(alpha, float | int) else list(alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        if is_binary(logits):
            y = binary_target(logits, target)
            # log p_t from log-sigmoids: stable for large |logits|.
            log_pt = y * F.logsigmoid(logits) + (1 - y) * F.logsigmoid(-logits)
            foreground = y
        else:
            labels = label_target(logits, target)
            log_pt = F.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1))
            foreground = (labels.unsqueeze(1) > 0).to(logits.dtype)
        # 1 − p_t via expm1 keeps its precision near p_t = 1; the floor keeps the gradient of
        # a fractional power finite where a saturated voxel has 1 − p_t = 0.
        one_minus = (-torch.expm1(log_pt)).clamp_min(torch.finfo(logits.dtype).tiny)
        modulation = one_minus**self.gamma
        loss = -modulation * log_pt
        if isinstance(self.alpha, list):
            if is_binary(logits) or len(self.alpha) != logits.shape[1]:
                raise ValueError(
                    f"focal alpha {self.alpha} needs one weight per class ({logits.shape[1]})"
                )
            weights = torch.tensor(self.alpha, dtype=logits.dtype, device=logits.device)
            loss = loss * weights[labels].unsqueeze(1)
        elif self.alpha is not None:
            loss = loss * (self.alpha * foreground + (1 - self.alpha) * (1 - foreground))
        return loss.mean()
