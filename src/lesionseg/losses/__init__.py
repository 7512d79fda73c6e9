"""Loss functions looked up by name in :data:`LOSSES` (cross-entropy, focal, Dice, EML, ...).

Every loss is called as ``loss(logits, target)`` and returns a scalar. One output
channel means sigmoid probabilities and a binary target; K ≥ 2 channels mean softmax
and integer class labels (see :mod:`lesionseg.losses._targets`). Recipes name a loss
as ``"dice"`` or ``{"name": "focal", "gamma": 2}``, built by :func:`build_loss`.
"""

from lesionseg.registry import Registry

LOSSES: Registry = Registry("loss")

# Register the losses (import after LOSSES exists; each module registers itself).
from lesionseg.losses import (  # noqa: E402, F401, I001
    cross_entropy,
    dice,
    enhanced_mixing,
    focal,
    combined,
    deep_supervision,
)
from lesionseg.losses.spec import build_loss  # noqa: E402

__all__ = ["LOSSES", "build_loss"]
