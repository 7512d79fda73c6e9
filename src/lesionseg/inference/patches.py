"""Patch classifiers at chosen voxels: one patch per centre, zeros outside the image."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.sampling.crop import box_around, crop

#: Patches per forward pass.
BATCH = 256


def cut_patches(image: np.ndarray, points: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """``(N, C, *size)`` patches of ``image`` centred at ``points`` (zeros outside the image).

    A patch of ``s`` voxels starts ``(s - 1) // 2`` before its centre, as samplers cut them.
    """
    patches = np.zeros((len(points), image.shape[0], *size), image.dtype)
    for n, point in enumerate(np.asarray(points, dtype=np.int64)):
        patches[n] = crop(image, box_around(point, size), size, 0.0)
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
