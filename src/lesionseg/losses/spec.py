"""Build a loss from a recipe entry: a name, a mapping with ``name`` and options, or a module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.losses import LOSSES


def build_loss(spec: str | Mapping[str, Any] | nn.Module) -> nn.Module:
    """The loss a recipe names.

    Args:
        spec: ``"dice"``; ``{"name": "focal", "gamma": 2}``; or an already built module
            (returned as is).

    Returns:
        The loss module, called as ``loss(logits, target)``.

    Raises:
        LesionsegError: No name, an unknown name or a bad option.
    """
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        return LOSSES.build(spec)
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise LesionsegError(f"loss {dict(spec)!r} needs a 'name' (known: {LOSSES.names()})")
        return LOSSES.build(name, **options)
    raise LesionsegError(f"a loss is a name or a mapping with 'name', got {spec!r}")
