"""Resampling between voxel spacings on axis-aligned grids.

The resampled grid covers the same field of view as the original: voxel
``i'`` of the new grid sits at continuous index ``(i' + 0.5)·n/n' − 0.5`` of the old
one (n, n' the sizes). Going back uses the inverse map to the exact original shape,
so a round trip returns on the original grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float | None]
) -> tuple[int, ...]:
    """Shape after resampling ``shape`` at ``spacing`` to ``target`` (None keeps an axis)."""
    out = []
    for n, s, t in zip(shape, spacing, target):
        out.append(n if t is None else max(1, int(round(n * s / float(t)))))
    return tuple(out)


def resample_to_shape(array: np.ndarray, out_shape: Sequence[int], order: int) -> np.ndarray:
    """Resample the trailing three axes of ``array`` to ``out_shape`` over the same extent.

    Args:
        array: ``(X, Y, Z)`` or channel-first ``(K, X, Y, Z)``.
        out_shape: Wanted spatial shape.
        order: Spline order: 0 nearest neighbour (labels), 1 linear (images, probabilities).
    """
    spatial = array.shape[-3:]
    if tuple(spatial) == tuple(out_shape):
        return array
    if array.ndim == 4:
        return np.stack([resample_to_shape(a, out_shape, order) for a in array])
    scale = np.array(spatial, dtype=np.float64) / np.array(out_shape, dtype=np.float64)
    offset = 0.5 * scale - 0.5
    dtype = array.dtype
    work = (
        array.astype(np.float32) if order > 0 and not np.issubdtype(dtype, np.floating) else array
    )
    out = ndimage.affine_transform(
        work, scale, offset=offset, output_shape=tuple(out_shape), order=order, mode="nearest"
    )
    return out.astype(dtype, copy=False)


def resampled_affine(
    affine: np.ndarray, in_shape: Sequence[int], out_shape: Sequence[int]
) -> np.ndarray:
    """Voxel-to-world affine of the resampled grid (same field of view)."""
    scale = np.array(in_shape, dtype=np.float64) / np.array(out_shape, dtype=np.float64)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(scale)
    index_map[:3, 3] = 0.5 * scale - 0.5
    return affine @ index_map
