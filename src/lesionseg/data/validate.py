"""Checks on one subject's files before any work is done on them.

Each check raises :class:`~lesionseg.errors.LesionsegError` with one line that
names the offending file and the problem, so that a user sees at once what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lesionseg.data.nifti import Grid, Volume
from lesionseg.errors import LesionsegError

#: Largest difference (mm) between affine entries of two grids still taken as "the same grid";
#: headers written by different tools for the same scan differ by ~1e-5 mm.
GRID_TOLERANCE_MM = 1e-3


def check_same_grid(volume: Volume, reference: Grid, what: str, reference_name: str) -> None:
    """Raise if ``volume`` is not on ``reference`` (shape, or affine beyond the tolerance)."""
    grid = volume.grid
    if tuple(grid.shape) != tuple(reference.shape):
        raise LesionsegError(
            f"{what} has shape {grid.shape} but {reference_name} has {reference.shape}",
            volume.path,
        )
    worst = float(np.abs(grid.affine - reference.affine).max())
    if worst > GRID_TOLERANCE_MM:
        raise LesionsegError(
            f"{what} affine differs from {reference_name}'s by up to {worst:.4g} mm "
            f"(orientation {grid.orientation} vs {reference.orientation}); "
            "resample it onto the same grid first",
            volume.path,
        )


def check_not_empty(volume: Volume, what: str) -> None:
    """Raise if every voxel of ``volume`` is zero."""
    if not np.any(volume.data):
        raise LesionsegError(f"{what} is all zeros", volume.path)


def check_label_values(volume: Volume, allowed: Iterable[int]) -> None:
    """Raise if the label map has non-integer values or values outside ``allowed``."""
    data = volume.data
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.equal(np.mod(data, 1), 0)):
        raise LesionsegError("label map has non-integer values", volume.path)
    found = np.unique(data.astype(np.int64))
    allowed_set = set(int(v) for v in allowed)
    bad = [int(v) for v in found if int(v) not in allowed_set]
    if bad:
        raise LesionsegError(
            f"label map has values {bad[:5]} outside the declared labels {sorted(allowed_set)}",
            volume.path,
        )


def check_mask_not_empty(mask: np.ndarray, path: Path | None) -> None:
    """Raise if a brain mask holds no voxel."""
    if not np.any(mask):
        raise LesionsegError("brain mask is empty", path)
