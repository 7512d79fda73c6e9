"""Post-processing steps applied to predicted class probabilities, looked up by name.

A step is registered in :data:`POSTPROCESS` and called on the preprocessed grid as
``step(probabilities, image=..., spacing=..., mask=..., **options)``: ``probabilities``
is ``(K, X, Y, Z)``, ``image`` the ``(C, X, Y, Z)`` model input on the same grid,
``spacing`` the voxel size in mm, ``mask`` the brain mask (or None), ``options`` the
step's settings from the recipe. It returns refined ``(K, X, Y, Z)`` probabilities.
Recipes name steps in ``predict.postprocess``, e.g. ``[crf]`` or
``[{crf: {params: crf.json}}]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lesionseg.registry import Registry

POSTPROCESS: Registry = Registry("post-processing step")


@POSTPROCESS.register("crf")
def crf_step(
    probabilities: np.ndarray,
    image: np.ndarray,
    spacing: Sequence[float],
    params: Any | Mapping[str, Any] | str | Path | None = None,
    *,
    mask: np.ndarray | None = None,
    threads: int | None = None,
    **overrides: Any,
) -> np.ndarray:
    """DeepMedic's 3D fully connected CRF (see :func:`lesionseg.postprocess.crf.dense_crf`).

    Args:
        probabilities: ``(K, X, Y, Z)`` class probabilities.
        image: ``(C, X, Y, Z)`` z-scored image channels.
        spacing: Voxel size in mm.
        params: CRF parameters: a file (e.g. from ``lesionseg crf-tune``), a mapping, a
            :class:`~lesionseg.postprocess.crf.CRFParams`, or None for the official ones.
        mask: Brain mask; voxels outside keep their input probabilities.
        threads: Threads for the CRF kernels.
        **overrides: Single parameters replacing those of ``params``
            (e.g. ``iterations: 2`` in a recipe).

    Returns:
        Refined ``(K, X, Y, Z)`` float32 probabilities.
    """
    from lesionseg.postprocess.crf import CRFParams, dense_crf, resolve_params

    settings = resolve_params(params)
    if overrides:
        settings = CRFParams.from_dict({**settings.to_dict(), **overrides})
    refined = dense_crf(probabilities, image, spacing, settings, threads=threads)
    if mask is not None:
        outside = np.asarray(mask) == 0
        refined[:, outside] = probabilities[:, outside]
    return refined


__all__ = ["POSTPROCESS", "crf_step"]
