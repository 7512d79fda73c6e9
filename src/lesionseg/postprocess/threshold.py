"""The ``threshold`` post-processing step: a label map from per-class probability thresholds."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lesionseg.errors import LesionsegError
from lesionseg.postprocess import POSTPROCESS

#: Threshold of a foreground class a mapping leaves out.
DEFAULT_THRESHOLD = 0.5


def class_thresholds(threshold: float | Mapping[int | str, float], num_classes: int) -> np.ndarray:
    """One threshold per foreground class (classes ``1..K-1``).

    Args:
        threshold: One threshold for every foreground class, or ``{class: threshold}``
            (classes left out get :data:`DEFAULT_THRESHOLD`).
        num_classes: K, background included.

    Returns:
        ``(K-1,)`` float thresholds, for classes 1 to K-1.

    Raises:
        LesionsegError: A class outside ``1..K-1`` or a threshold outside [0, 1].
    """
    values = np.full(num_classes - 1, DEFAULT_THRESHOLD)
    if isinstance(threshold, Mapping):
        for key, value in threshold.items():
            cls = int(key) if str(key).isdigit() else -1
            if not 1 <= cls < num_classes:
                raise LesionsegError(
                    f"threshold: class {key!r} is not a foreground class of this model "
                    f"(1..{num_classes - 1})"
                )
            values[cls - 1] = _probability(value)
    else:
        values[:] = _probability(threshold)
    return values


def _probability(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise LesionsegError(f"threshold: expected a probability in [0, 1], got {value!r}")
    return float(value)


@POSTPROCESS.register("threshold")
def threshold_labels(
    probabilities: np.ndarray, *, threshold: float | Mapping[int | str, float] = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Label each voxel with its most probable foreground class among those over threshold.

    A foreground class ``c`` (1 to K-1) passes at a voxel when its probability is at
    least its threshold ``t_c``; the voxel gets the passing class with the highest
    probability (the lower class on a tie), or background (0) when none passes. With
    two classes, as for a one-map sigmoid model (whose map ``p`` is given as
    ``(1 − p, p)``), this labels ``p ≥ t``. A label step: the probabilities are left
    as they are (see :mod:`lesionseg.postprocess.chain`).

    Args:
        probabilities: ``(K, X, Y, Z)`` class probabilities, K ≥ 2.
        threshold: One threshold for every foreground class (``0.6``), or one per class
            (``{1: 0.6, 2: 0.4}``; classes left out get 0.5).

    Returns:
        ``(X, Y, Z)`` uint8 labels.

    Raises:
        LesionsegError: Fewer than two classes, a bad class or threshold.
    """
    if probabilities.shape[0] < 2:
        raise LesionsegError("threshold: needs background and at least one foreground map")
    thresholds = class_thresholds(threshold, probabilities.shape[0])
    foreground = probabilities[1:]
    passing = foreground >= thresholds.reshape(-1, *([1] * (foreground.ndim - 1)))
    best = np.where(passing, foreground, -1.0).argmax(axis=0)
    return np.where(passing.any(axis=0), best + 1, 0).astype(np.uint8)
