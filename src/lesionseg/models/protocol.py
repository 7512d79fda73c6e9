"""The one model contract every registered architecture follows.

A model is an ``nn.Module`` with a :class:`~lesionseg.models.geometry.ModelGeometry` in its
``geometry`` attribute that maps ``(N, geometry.input_channels_total, *input)`` to logits
``(N, geometry.num_classes, *geometry.output_size(input))`` (``(N, num_classes)`` for a
patch classifier), or a tuple of such outputs whose first is the full-resolution one (deep
supervision, EDD Net's heads). Samplers, predictors and the trainer rely on nothing else.
The contract tests (``tests/models/test_model_contract.py``) check it for every registered
model.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from lesionseg.models.geometry import ModelGeometry


@runtime_checkable
class SegmentationModel(Protocol):
    """What lesionseg asks of a model."""

    geometry: ModelGeometry

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits for a batch of inputs."""
