"""Validation by full-volume segmentation: mean Dice over validation cases.

Each validation case is segmented whole with the same predictor as
``lesionseg predict`` (tiled, valid-convolution aware), on the preprocessed grid,
and compared with its reference labels inside the volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def dice_per_class(pred: np.ndarray, ref: np.ndarray, classes: Sequence[int]) -> list[float]:
    """Dice of each foreground class (1.0 when both prediction and reference are empty)."""
    scores = []
    for k in classes:
        p, r = pred == k, ref == k
        denom = int(p.sum()) + int(r.sum())
        scores.append(1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom)
    return scores


def validate(
    model: nn.Module,
    subjects: Sequence,
    *,
    classes: Sequence[int],
    device: torch.device | str = "cpu",
    amp: bool = False,
    tile_size: Sequence[int] | None = None,
    axis: int = 2,
) -> tuple[float, dict[str, float]]:
    """Segment each subject whole and return (mean Dice, Dice per case).

    Args:
        model: The network (in eval mode during prediction, restored afterwards).
        subjects: Preprocessed subjects with ``image``, ``mask`` and ``label``.
        classes: Foreground classes whose Dice is averaged (per case, then over cases).
        device: Device to predict on.
        amp: Mixed precision (CUDA only).
        tile_size: Predictor tile (output) size; None lets the predictor choose.
        axis: Slice axis for 2D models (the axis their training slices were drawn along).
    """
    from lesionseg.inference.predictor import labels_from_probabilities, predict_volume

    was_training = model.training
    model.eval()
    per_case: dict[str, float] = {}
    try:
        for subject in subjects:
            probabilities = predict_volume(
                model,
                np.asarray(subject.image),
                mask=np.asarray(subject.mask),
                tile_size=None if tile_size is None else tuple(tile_size),
                device=str(device),
                amp=amp,
                axis=axis,
            )
            # A sigmoid model has two maps (1 − p, p) here: the argmax is then p > 0.5.
            pred = labels_from_probabilities(probabilities)
            scores = dice_per_class(pred, np.asarray(subject.label), classes)
            per_case[subject.id] = float(np.mean(scores))
    finally:
        model.train(was_training)
    mean = float(np.mean(list(per_case.values()))) if per_case else float("nan")
    return mean, per_case
