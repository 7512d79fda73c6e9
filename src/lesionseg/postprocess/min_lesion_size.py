"""The ``min-lesion-size`` post-processing step: remove lesions smaller than a size."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lesionseg.errors import LesionsegError
from lesionseg.postprocess import POSTPROCESS
from lesionseg.postprocess.chain import current_labels
from lesionseg.postprocess.components import find_components

NAME = "min-lesion-size"
UNITS = ("mm3", "voxels")

#: Relative tolerance of the size comparison (spacings are often stored in single precision).
RELATIVE_TOLERANCE = 1e-6


def voxel_size(unit: str, spacing: Sequence[float] | None) -> float:
    """What one voxel counts for in ``unit``: its volume in mm³, or 1 for voxels.

    Raises:
        LesionsegError: An unknown unit, or mm³ without a spacing.
    """
    if unit == "voxels":
        return 1.0
    if unit != "mm3":
        raise LesionsegError(f"{NAME}: unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if spacing is None:
        raise LesionsegError(f"{NAME}: a size in mm3 needs the voxel spacing")
    return float(math.prod(float(s) for s in spacing))


@POSTPROCESS.register(NAME)
def remove_small_lesions(
    probabilities: np.ndarray,
    *,
    size: float,
    unit: str = "mm3",
    connectivity: int = 26,
    labels: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Remove the connected components of each foreground class smaller than ``size``.

    A component of ``n`` voxels is kept when ``n`` (unit ``voxels``) or ``n`` times the
    voxel volume (unit ``mm3``) is at least ``size``; smaller ones become background.
    Sizes are measured on the grid the step runs on: in the pipeline, the preprocessed
    grid (resampled to the model's spacing, if its recipe asks), with that grid's
    spacing, so a size in mm³ means the same whatever the input's voxel size, while a
    size in voxels counts voxels of the preprocessed grid. A label step (see
    :mod:`lesionseg.postprocess.chain`): it works on the current label map, or on the
    argmax of the probabilities when no step made one.

    Args:
        probabilities: ``(K, X, Y, Z)`` class probabilities.
        size: The smallest size kept, ≥ 0.
        unit: ``"mm3"`` or ``"voxels"``.
        connectivity: 26 (faces, edges and corners touch), 18 or 6 (faces only).
        labels: The label map a previous step made, or None.
        spacing: Voxel size in mm (needed for ``mm3``).

    Returns:
        ``(X, Y, Z)`` uint8 labels.

    Raises:
        LesionsegError: A negative size, an unknown unit or connectivity.
    """
    if isinstance(size, bool) or not isinstance(size, int | float) or not size >= 0:
        raise LesionsegError(f"{NAME}: size must be a number ≥ 0, got {size!r}")
    per_voxel = voxel_size(unit, spacing)
    labels = current_labels(probabilities, labels)
    components = find_components(labels, connectivity, NAME)
    kept = components.sizes * per_voxel >= size * (1 - RELATIVE_TOLERANCE)
    return components.keep(labels, kept)
