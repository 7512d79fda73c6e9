"""Per-channel z-score normalisation over the brain mask (all five papers do this)."""

from __future__ import annotations

import numpy as np


def zscore(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Normalise each channel of ``image`` to mean 0, SD 1 inside ``mask``; 0 outside.

    Args:
        image: ``(C, X, Y, Z)`` float array.
        mask: ``(X, Y, Z)`` brain mask.

    Returns:
        The normalised image (float32) and each channel's (mean, SD) in the mask.
    """
    inside = mask.astype(bool)
    out = np.zeros(image.shape, dtype=np.float32)
    stats = []
    for c, channel in enumerate(image):
        values = channel[inside].astype(np.float64)
        mean = float(values.mean())
        std = float(values.std())
        std = std if std > 1e-8 else 1.0  # a constant channel stays finite (all zeros)
        out[c][inside] = ((values - mean) / std).astype(np.float32)
        stats.append((mean, std))
    return out, stats
