"""Patch classifiers at chosen voxels: one patch per centre, zeros outside the image."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lesionseg.errors import LesionsegError

#: Patches per forward pass.
BATCH = 256


def cut_patches(image: np.ndarray, points: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """``(N, C, *size)`` patches of ``image`` centred at ``points`` (zeros outside the image).

    A patch of ``s`` voxels starts ``s // 2`` before its centre. Each patch is copied from
    the part of the image it overlaps, so no padded copy of the volume is ever made.
    """
    spatial = np.array(image.shape[1:])
    size_arr = np.array(size)
    patches = np.zeros((len(points), image.shape[0], *size), image.dtype)
    for n, point in enumerate(np.asarray(points, dtype=np.int64)):
        start = point - size_arr // 2
        lo, hi = np.maximum(start, 0), np.minimum(start + size_arr, spatial)
        if np.any(hi <= lo):
            continue  # the patch lies outside the image: all zeros
        src = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        dst = tuple(slice(int(a), int(b)) for a, b in zip(lo - start, hi - start))
        patches[(n, slice(None), *dst)] = image[(slice(None), *src)]
    return patches


def classify_at(model: nn.Module, image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, K)`` probabilities of a patch classifier at ``(N, D)`` voxel centres.

    Raises:
        LesionsegError: The model is not a patch classifier of this dimensionality.
    """
    from lesionseg.inference.predictor import num_outputs, to_probabilities

    geometry = model.geometry
    if geometry.patch_size is None or len(geometry.patch_size) != image.ndim - 1:
        raise LesionsegError(
            f"this model is not a {image.ndim - 1}D patch classifier: it cannot score components"
        )
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(points), BATCH):
            batch = cut_patches(image, points[start : start + BATCH], tuple(geometry.patch_size))
            logits = model(torch.from_numpy(batch).to(device))
            out.append(to_probabilities(logits, geometry).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, num_outputs(geometry)), np.float32)
