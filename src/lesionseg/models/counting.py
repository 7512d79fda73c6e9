"""Parameter counts, PyTorch-style or as Keras reports them.

Papers built with Keras quote ``model.summary()``'s "Total params", which includes
the non-trainable moving mean and variance of every batch-normalisation layer.
``param_count(model, keras=True)`` reproduces that figure so it can be compared
with a paper (e.g. D-UNet's 8,640,163 versus 8,633,379 PyTorch parameters).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _running_stats(module: nn.Module) -> int:
    if isinstance(module, _BatchNorm) and module.track_running_stats:
        return module.running_mean.numel() + module.running_var.numel()
    return 0


def param_count(model: nn.Module, keras: bool = False, trainable_only: bool = False) -> int:
    """Number of parameters of ``model``.

    Args:
        model: Any module; shared parameters are counted once.
        keras: Also count batch-norm running mean and variance, as Keras' total does.
        trainable_only: Count only parameters with ``requires_grad`` (and no running
            statistics).

    Returns:
        The count.
    """
    count = sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
    if keras and not trainable_only:
        count += sum(_running_stats(m) for m in model.modules())
    return count


def param_breakdown(model: nn.Module, keras: bool = False) -> dict[str, int]:
    """Parameter count per direct child of ``model`` (plus ``"(own)"`` for its own parameters).

    Args:
        model: Any module.
        keras: Count batch-norm running statistics as Keras does.

    Returns:
        Child name → count, in registration order; the values sum to
        ``param_count(model, keras)`` unless children share parameters.
    """
    counts = {name: param_count(child, keras) for name, child in model.named_children()}
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        counts["(own)"] = own
    return counts
