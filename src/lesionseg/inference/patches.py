"""Patch classifiers at chosen voxels: one patch per centre, zeros outside the image.

Classifying a patch around each of hundreds of thousands of voxels is the whole cost of
a patch-classifier method (the MSSEG cascade: 99.6 M multiply-adds a patch), so the
patches are never copied one by one: each batch's voxels (sorted, so neighbours) span a
small box of the zero-padded volume, cut once; every patch is a window of that box's
strided view (``sliding_window_view``, no copy), and one fancy-indexing gather writes the
batch the network reads. Batches are sized to a memory budget from the network's
activation estimate. The result is exactly that of classifying each patch on its own:
the same values, as the test suite checks at voxels near the image border too.

Dense evaluation of the convolutions over the candidate region was measured against
this and not chosen (docs/cascade.md): with the patch's own zero padding reproduced,
the second convolution (the larger) cannot be shared between neighbouring patches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.inference.padding import PaddedVolume

#: Share of the free memory one batch of patches may take, and the cap on a batch.
MEMORY_SHARE = 0.25
MAX_BYTES = 1 << 30
MAX_BATCH = 8192


def patch_batch_size(model: nn.Module, device: torch.device | str = "cpu") -> int:
    """Patches per forward pass within the memory budget (16 … :data:`MAX_BATCH`)."""
    from lesionseg.inference.tiling import activation_bytes, free_memory_bytes

    geometry = model.geometry
    shape = (1, geometry.input_channels_total, *geometry.patch_size)
    per_patch = activation_bytes(model, shape)
    budget = min(MAX_BYTES, MEMORY_SHARE * free_memory_bytes(torch.device(device)))
    return int(np.clip(budget // max(per_patch, 1), 16, MAX_BATCH))


def patch_batches(
    image: np.ndarray, points: np.ndarray, size: Sequence[int], batch_size: int
) -> Iterator[tuple[slice, np.ndarray]]:
    """Batches of patches of ``image`` centred at ``points``, zeros outside the image.

    A patch of ``s`` voxels starts ``s // 2`` before its centre (the centre is the middle
    voxel of an odd patch), as the samplers cut them.

    Args:
        image: ``(C, *spatial)`` array.
        points: ``(N, D)`` voxel centres; the batches follow their order (sort them for
            small boxes: ``np.argwhere`` does).
        size: Patch size per axis.
        batch_size: Patches per batch.

    Yields:
        ``(rows, batch)``: the slice of ``points`` and their ``(n, C, *size)`` patches.
    """
    size = tuple(int(s) for s in size)
    before = np.array([s // 2 for s in size])
    widths = [(0, 0), *((b, s - 1 - b) for b, s in zip(before, size))]
    padded = PaddedVolume(image, widths, "constant")
    axes = tuple(range(1, image.ndim))
    points = np.asarray(points, dtype=np.int64).reshape(-1, image.ndim - 1)
    for start in range(0, len(points), batch_size):
        rows = slice(start, min(start + batch_size, len(points)))
        group = points[rows]
        # In padded coordinates the patch of voxel v starts at v.
        low, high = group.min(0), group.max(0)
        box = padded.box(low, high - low + np.array(size))
        windows = sliding_window_view(box, size, axis=axes)  # (C, *starts, *size), a view
        windows = np.moveaxis(windows, 0, image.ndim - 1)  # (*starts, C, *size)
        yield rows, windows[tuple((group - low).T)]


def classify_points(
    run: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    points: np.ndarray,
    patch_size: Sequence[int],
    num_outputs: int,
    batch_size: int,
) -> np.ndarray:
    """``(N, K)`` probabilities: ``run`` on the patch of every point, batch by batch.

    Args:
        run: ``(n, C, *patch) -> (n, K)`` probabilities (a predictor's runner).
        image: ``(C, *spatial)`` preprocessed image.
        points: ``(N, D)`` voxel centres.
        patch_size: The classifier's patch.
        num_outputs: K.
        batch_size: Patches per forward pass.
    """
    out = np.zeros((len(points), num_outputs), np.float32)
    for rows, batch in patch_batches(image, points, patch_size, batch_size):
        out[rows] = np.asarray(run(batch)).reshape(len(batch), num_outputs)
    return out


def classify_at(
    model: nn.Module,
    image: np.ndarray,
    points: np.ndarray,
    probability: np.ndarray | None = None,
) -> np.ndarray:
    """``(N, K)`` probabilities of a patch classifier at ``(N, D)`` voxel centres.

    A classifier whose geometry lists ``patch_scales`` (MUSCLE Net) reads, within each
    centre's slice, image patches at those scales resized to its patch and the patch of
    ``probability`` (:mod:`lesionseg.inference.multiscale`); any other reads the patch of
    the image.

    Raises:
        LesionsegError: The model is not a patch classifier of this dimensionality, or a
            multi-scale one without ``probability``.
    """
    from lesionseg.inference.predictor import num_outputs, to_probabilities

    geometry = model.geometry
    device = next(model.parameters()).device

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        return to_probabilities(logits, geometry).float().cpu().numpy()

    k = num_outputs(geometry)
    batch = patch_batch_size(model, device)
    if getattr(geometry, "patch_scales", None):
        return _classify_multiscale(run, geometry, image, points, probability, k, batch)
    if geometry.patch_size is None or len(geometry.patch_size) != image.ndim - 1:
        raise LesionsegError(
            f"this model is not a {image.ndim - 1}D patch classifier: it cannot score components"
        )
    return classify_points(run, image, points, geometry.patch_size, k, batch)


def _classify_multiscale(run, geometry, image, points, probability, k, batch) -> np.ndarray:
    """A multi-scale 2D classifier on slice patches of a volume (MUSCLE Net)."""
    from lesionseg.inference.multiscale import multiscale_patches_3d

    if probability is None:
        raise LesionsegError(
            "this classifier reads a segmenter's probabilities: give it as the second input "
            "of rescore-components"
        )
    out = np.zeros((len(points), k), np.float32)
    for start in range(0, len(points), batch):
        group = points[start : start + batch]
        out[start : start + len(group)] = run(
            multiscale_patches_3d(
                image,
                probability,
                group,
                slice_axis=geometry.slice_axis,
                sizes=geometry.patch_scales,
                out_size=geometry.patch_size[0],
            )
        )
    return out
