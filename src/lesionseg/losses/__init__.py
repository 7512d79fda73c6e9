"""Loss functions looked up by name in :data:`LOSSES` (cross-entropy, focal, Dice, EML, ...)."""

from lesionseg.registry import Registry

LOSSES: Registry = Registry("loss")

__all__ = ["LOSSES"]
