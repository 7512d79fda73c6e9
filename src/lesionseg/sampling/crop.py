"""Cutting boxes out of volumes, padding where a box leaves the volume.

Shared by every sampler (3D segments, 2D slices, patches around candidates):
a box is given by its start (may be negative) and size on the last spatial axes
of an array; only the part inside the volume is read, so memory-mapped arrays
stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def crop(
    array: np.ndarray,
    start: Sequence[int],
    size: Sequence[int],
    pad_value: float | int = 0,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Cut the box ``[start, start + size)`` from the last ``len(size)`` axes of ``array``.

    Leading axes (channels) are kept whole. Voxels of the box outside the array
    take ``pad_value``.

    Args:
        array: Array of shape ``(*leading, *spatial)`` (a memory map is fine).
        start: First voxel of the box per spatial axis (may be negative).
        size: Box size per spatial axis.
        pad_value: Value of voxels outside the array.
        dtype: dtype of the result (default: the array's).

    Returns:
        Array of shape ``(*leading, *size)``.
    """
    n = len(size)
    spatial = array.shape[-n:]
    leading = array.shape[:-n]
    out = np.full((*leading, *size), pad_value, dtype=dtype or array.dtype)
    src, dst = [], []
    for s, sz, dim in zip(start, size, spatial):
        lo, hi = max(int(s), 0), min(int(s) + int(sz), dim)
        if hi <= lo:  # box entirely outside on this axis
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    ell = (slice(None),) * len(leading)
    out[ell + tuple(dst)] = array[ell + tuple(src)]
    return out


def box_around(
    centre: Sequence[int], size: Sequence[int], before: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Start of a box of ``size`` whose voxel ``before`` is ``centre``.

    ``before`` defaults to the middle voxel, ``(size - 1) // 2``.
    """
    if before is None:
        before = [(s - 1) // 2 for s in size]
    return tuple(int(c) - int(b) for c, b in zip(centre, before))
