"""Cropping to the brain's bounding box with a margin."""

from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray, margin: int | tuple[int, ...] = 0) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels of ``mask``, widened by ``margin`` and clipped.

    Args:
        mask: Array whose non-zero voxels must lie in the box.
        margin: Voxels added on each side (one value, or one per axis).

    Returns:
        One slice per axis. An empty mask gives the whole array.
    """
    margins = (margin,) * mask.ndim if np.isscalar(margin) else tuple(margin)
    if not np.any(mask):
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for axis, size in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=others))
        lo, hi = max(0, hits[0] - margins[axis]), min(size, hits[-1] + 1 + margins[axis])
        box.append(slice(int(lo), int(hi)))  # plain ints: the box goes into JSON records
    return tuple(box)


def uncrop(
    array: np.ndarray, box: tuple[slice, ...], full_shape: tuple[int, ...], fill: float = 0
) -> np.ndarray:
    """Place a cropped spatial array (trailing axes = ``box``) back into ``full_shape``.

    Leading (channel) axes are kept: ``array`` may be ``(X, Y, Z)`` or ``(K, X, Y, Z)``.
    """
    lead = array.shape[: array.ndim - len(box)]
    out = np.full(lead + tuple(full_shape), fill, dtype=array.dtype)
    out[(Ellipsis, *box)] = array
    return out
