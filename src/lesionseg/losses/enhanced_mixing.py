"""Enhanced Mixing Loss of D-UNet (Zhou et al., papers/004, Eq. 5), as the authors coded it.

EML = focal − log(dice), over the whole batch at once:

* dice = (2Σyp + s) / (Σy² + Σp² + s), s = 1, with the unclipped probabilities;
* p clipped to [ε, 1 − ε] (Keras' ε = 1e-7), then
  focal = −mean[α(1 − p)^γ log p · [y = 1]] − mean[(1 − α) p^γ log(1 − p) · [y = 0]],
  both means over all pixels, α = 0.48, γ = 1.1.

The paper's text swaps α and γ; these are the values of the official ``EML`` function
(SZUHvern/D-UNet, ``Stroke_segment.py``) and of SPECS.md §5. Pixels whose target is
neither 0 nor 1 add nothing to the focal term, as in that code.
"""

from __future__ import annotations

import torch
from torch import nn

from lesionseg.losses import LOSSES
from lesionseg.losses._targets import binary_target, label_target


@LOSSES.register("enhanced_mixing")
class EnhancedMixingLoss(nn.Module):
    """Enhanced Mixing Loss for binary segmentation.

    ``logits`` (N, 1, *spatial) with a binary target (sigmoid), or (N, 2, *spatial) with
    class labels (softmax; p is the probability of class 1).

    Args:
        alpha: Weight α of the foreground focal term (1 − α for background).
        gamma: Focusing exponent γ.
        smooth: s in the Dice ratio.
        eps: Clipping ε of the probabilities in the focal term.
    """

    def __init__(
        self, alpha: float = 0.48, gamma: float = 1.1, smooth: float = 1.0, eps: float = 1e-7
    ):
        super().__init__()
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.smooth = float(smooth)
        self.eps = float(eps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        if logits.shape[1] == 1:
            p = torch.sigmoid(logits)
            y = binary_target(logits, target)
        elif logits.shape[1] == 2:
            p = torch.softmax(logits, dim=1)[:, 1:]
            y = (label_target(logits, target) == 1).unsqueeze(1).to(logits.dtype)
        else:
            raise ValueError(
                f"the Enhanced Mixing Loss is binary: logits need 1 or 2 channels, "
                f"got {logits.shape[1]}"
            )
        dice = (2 * (y * p).sum() + self.smooth) / ((y * y).sum() + (p * p).sum() + self.smooth)
        p = p.clamp(self.eps, 1 - self.eps)
        zero = torch.zeros_like(p)
        positive = torch.where(y == 1, self.alpha * (1 - p) ** self.gamma * torch.log(p), zero)
        negative = torch.where(y == 0, (1 - self.alpha) * p**self.gamma * torch.log(1 - p), zero)
        focal = -positive.mean() - negative.mean()
        return focal - torch.log(dice)
