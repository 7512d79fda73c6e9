"""MUSCLE Net's input: multi-scale image patches and a probability patch at each centre.

For each candidate centre, the image patch of every size in ``sizes`` (16, 24 and 32
pixels for MUSCLE Net) is cut as lesionseg cuts patches (the centre at index ``s // 2``,
zeros outside the image: :func:`~lesionseg.inference.patches.patch_batches`) and resized
to ``out_size`` × ``out_size``; the probability map's patch of ``out_size`` pixels follows,
not resized (../shared/SPECS.md §4).

Resizing is exact area averaging: every output pixel is the mean of the image over its
footprint, fractional pixels weighted by the share they cover (each pixel is repeated
``lcm(s, out_size) / s`` times with ``torch.repeat_interleave``, then the result is
average-pooled by ``lcm(s, out_size) / out_size``). A 32-pixel patch so becomes exactly
its 2 × 2 block means, a 24-pixel one weights every pixel alike, and the 16-pixel patch
is left as it is. Bilinear sampling without anti-aliasing would skip or under-weight
pixels of the larger patches (at 1.5× the middle pixel of every three gets two thirds of
the others' weight; ``interpolate(mode="area")``, adaptive pooling, gets it twice theirs),
and averaging damps DWI noise; the centre pixel lands in output pixel ``out_size // 2`` at
16, 24 and 32 pixels alike. The paper does not say how it resized.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lesionseg.inference.patches import patch_batches


def _crops(image: np.ndarray, centres: np.ndarray, size: int) -> np.ndarray:
    """``(N, C, size, size)`` float32 patches of a ``(C, H, W)`` image, zeros outside."""
    out = np.zeros((len(centres), image.shape[0], size, size), np.float32)
    for rows, batch in patch_batches(image, centres, (size, size), max(len(centres), 1)):
        out[rows] = batch
    return out


def area_resize(patches: np.ndarray, out_size: int) -> np.ndarray:
    """``(N, C, s, s)`` patches resized to ``(N, C, out_size, out_size)`` by area averaging."""
    size = patches.shape[-1]
    if size == out_size or not len(patches):
        return patches.reshape(*patches.shape[:2], out_size, out_size)
    common = math.lcm(size, out_size)
    x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    repeat = common // size
    if repeat > 1:
        x = x.repeat_interleave(repeat, dim=-1).repeat_interleave(repeat, dim=-2)
    return F.avg_pool2d(x, common // out_size).numpy()


def multiscale_patches(
    image: np.ndarray,
    probability: np.ndarray,
    centres: np.ndarray,
    sizes: Sequence[int] = (16, 24, 32),
    out_size: int = 16,
) -> np.ndarray:
    """MUSCLE Net's ``(N, C·len(sizes) + 1, out_size, out_size)`` inputs at 2D centres.

    Args:
        image: ``(H, W)`` slice, or ``(C, H, W)`` for several image channels.
        probability: ``(H, W)`` probability map of the same slice (EDD Net's lesion class).
        centres: ``(N, 2)`` integer pixel centres.
        sizes: Side of each image patch before resizing.
        out_size: Side of every output map (and of the probability patch).

    Returns:
        float32 maps: for each size, the ``C`` image channels' patches resized by area
        averaging (:func:`area_resize`); then the probability patch, not resized.

    Raises:
        ValueError: Shapes that do not fit.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    probability = np.asarray(probability, dtype=np.float32)
    if image.ndim != 3 or probability.shape != image.shape[1:]:
        raise ValueError(
            f"image {image.shape} and probability {probability.shape} must be (C, H, W) "
            "or (H, W) and (H, W) of the same slice"
        )
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 2)
    maps = []
    for size in (int(s) for s in sizes):
        maps.append(area_resize(_crops(image, centres, size), out_size))
    maps.append(_crops(probability[None], centres, out_size))
    return np.concatenate(maps, axis=1)


def multiscale_patches_3d(
    image: np.ndarray,
    probability: np.ndarray,
    centres: np.ndarray,
    slice_axis: int = 2,
    sizes: Sequence[int] = (16, 24, 32),
    out_size: int = 16,
) -> np.ndarray:
    """:func:`multiscale_patches` at voxel centres of a volume, within each centre's slice.

    The in-plane axes are the other two, in order (as the slice predictor reads slices).

    Args:
        image: ``(X, Y, Z)`` volume, or ``(C, X, Y, Z)``.
        probability: ``(X, Y, Z)`` probability map.
        centres: ``(N, 3)`` integer voxel centres.
        slice_axis: Spatial axis the slices run along (2: axial).
        sizes: Side of each image patch before resizing.
        out_size: Side of every output map.

    Returns:
        ``(N, C·len(sizes) + 1, out_size, out_size)`` float32, rows in the order of ``centres``.

    Raises:
        ValueError: Shapes that do not fit, or a centre outside the volume's slices.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    probability = np.asarray(probability)
    if image.ndim != 4 or probability.shape != image.shape[1:]:
        raise ValueError(
            f"image {image.shape} and probability {probability.shape} must be (C, X, Y, Z) "
            "or (X, Y, Z) and (X, Y, Z) of the same volume"
        )
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    slices = centres[:, slice_axis]
    if len(centres) and (slices.min() < 0 or slices.max() >= probability.shape[slice_axis]):
        raise ValueError(f"centre slice outside 0 … {probability.shape[slice_axis] - 1}")
    plane = [a for a in range(3) if a != slice_axis]
    out = np.zeros((len(centres), image.shape[0] * len(sizes) + 1, out_size, out_size), np.float32)
    for index in np.unique(slices):
        rows = np.flatnonzero(slices == index)
        out[rows] = multiscale_patches(
            np.take(image, index, axis=slice_axis + 1),
            np.take(probability, index, axis=slice_axis),
            centres[rows][:, plane],
            sizes,
            out_size,
        )
    return out
