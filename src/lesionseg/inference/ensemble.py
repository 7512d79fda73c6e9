"""Ensembles: the mean of several models' probabilities (the paper's ensemble of three)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.inference.predictor import num_outputs, predict_volume


def predict_ensemble(
    models: Sequence[nn.Module],
    image: np.ndarray,
    *,
    weights: Sequence[float] | None = None,
    **kwargs,
) -> np.ndarray:
    """Average the probabilities of ``models`` on one preprocessed image.

    Args:
        models: Networks taking the same channels and giving the same classes.
        image: ``(C, X, Y, Z)`` preprocessed image.
        weights: Optional weight per model (normalised to sum to 1); default equal.
        **kwargs: Passed to :func:`~lesionseg.inference.predictor.predict_volume`
            (mask, tile_size, device, amp, batch_size, flip_axes, axis).

    Returns:
        ``(K, X, Y, Z)`` float32 mean probabilities.

    Raises:
        LesionsegError: No models, or models with different numbers of classes.
    """
    if not models:
        raise LesionsegError("an ensemble needs at least one model")
    counts = {num_outputs(m.geometry) for m in models}
    if len(counts) > 1:
        raise LesionsegError(
            f"ensemble members give different numbers of classes: {sorted(counts)}"
        )
    if weights is None:
        weights = [1.0] * len(models)
    if len(weights) != len(models) or min(weights) < 0 or sum(weights) <= 0:
        raise LesionsegError("ensemble weights: one non-negative weight per model, not all zero")
    total = None
    for model, weight in zip(models, weights):
        probs = predict_volume(model, image, **kwargs) * (weight / sum(weights))
        total = probs if total is None else total + probs
    return total.astype(np.float32, copy=False)
