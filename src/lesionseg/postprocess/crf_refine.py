"""The ``crf`` post-processing step: DeepMedic's 3D fully connected CRF on the probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from lesionseg.postprocess import POSTPROCESS


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

    A probability step: it returns new probabilities, so the label map is their argmax
    until a later step makes another (see :mod:`lesionseg.postprocess.chain`).

    Args:
        probabilities: ``(K, X, Y, Z)`` class probabilities.
        image: ``(C, X, Y, Z)`` z-scored image channels.
        spacing: Voxel size in mm.
        params: CRF parameters: a file (e.g. from ``lesionseg crf-tune``), a mapping, a
            :class:`~lesionseg.postprocess.crf.CRFParams`, or None for the official ones.
        mask: Brain mask; voxels outside keep their input probabilities.
        threads: Threads for the CRF kernels.
        **overrides: Single parameters replacing those of ``params``
            (e.g. ``iterations: 2`` in a recipe); the names are :func:`crf_parameters`.

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


def crf_parameters() -> list[str]:
    """The CRF parameters :func:`crf_step` takes as single options (``iterations``, ...)."""
    from lesionseg.postprocess.crf import CRFParams  # lazy: the CRF kernels load numba

    return [f.name for f in fields(CRFParams)]


#: The options ``**overrides`` passes on, checked by name when a recipe loads.
crf_step.forwarded_options = crf_parameters
