"""Cross-entropy on logits: binary (sigmoid) for one channel, categorical (softmax) otherwise."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.losses import LOSSES
from lesionseg.losses._targets import binary_target, is_binary, label_target


@LOSSES.register("cross_entropy")
class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy over all voxels.

    Inputs follow :mod:`lesionseg.losses._targets`: ``logits`` (N, K, *spatial);
    ``target`` binary for K = 1 (sigmoid), class labels for K ≥ 2 (softmax).

    Args:
        weight: Per-class weights (K ≥ 2 only); the mean is then weighted, as in
            ``torch.nn.functional.cross_entropy``.
        pos_weight: Weight of the positive term (K = 1 only).
    """

    def __init__(self, weight: Sequence[float] | None = None, pos_weight: float | None = None):
        super().__init__()
        self.register_buffer(
            "weight", None if weight is None else torch.tensor(weight, dtype=torch.float32)
        )
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.tensor([float(pos_weight)])
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        if is_binary(logits):
            pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits)
            return F.binary_cross_entropy_with_logits(
                logits, binary_target(logits, target), pos_weight=pos_weight
            )
        weight = None if self.weight is None else self.weight.to(logits)
        return F.cross_entropy(logits, label_target(logits, target), weight=weight)
