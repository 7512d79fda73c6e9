"""How losses read (logits, target) pairs; the convention shared by every loss.

* One output channel, ``logits`` (N, 1, *spatial): sigmoid probabilities; ``target``
  binary (0/1), shaped (N, 1, *spatial) or (N, *spatial).
* K ≥ 2 channels, ``logits`` (N, K, *spatial): softmax probabilities; ``target``
  integer class labels in [0, K), shaped (N, *spatial) or (N, 1, *spatial).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def is_binary(logits: torch.Tensor) -> bool:
    """True for a one-channel (sigmoid) output."""
    return logits.shape[1] == 1


def _drop_channel(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if target.dim() == logits.dim() and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target of shape {tuple(target.shape)} does not fit logits of shape "
            f"{tuple(logits.shape)}: expected (N, *spatial) or (N, 1, *spatial)"
        )
    return target


def binary_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 0/1 target of a one-channel output as floats shaped like ``logits``."""
    return _drop_channel(logits, target).unsqueeze(1).to(logits.dtype)


def label_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The class labels of a K-channel output as int64 (N, *spatial)."""
    return _drop_channel(logits, target).long()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid (one channel) or softmax over channels."""
    return torch.sigmoid(logits) if is_binary(logits) else torch.softmax(logits, dim=1)


def one_hot_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The target shaped like ``logits``: the binary map, or one-hot class labels."""
    if is_binary(logits):
        return binary_target(logits, target)
    labels = label_target(logits, target)
    return F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
