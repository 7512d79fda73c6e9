"""Reading the CRF's inputs from NIfTI files: class probabilities and image channels.

Probabilities come as a 4D NIfTI with one map per class (``<case>_prob.nii.gz`` as
``lesionseg predict`` writes them) or as a 3D foreground probability for a binary task.
Images are 3D NIfTI files, one per channel, on the same grid; they are z-scored inside
their non-zero voxels unless they already are (the CRF's intensity range assumes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from lesionseg.data.nifti import Grid, is_nifti_path, load_nifti
from lesionseg.errors import LesionsegError

_ZSCORE_TOLERANCE = 0.05  # a channel with |mean| and |SD - 1| below this counts as z-scored


def load_probabilities(path: str | Path) -> tuple[np.ndarray, Grid]:
    """Class probabilities ``(K, X, Y, Z)`` and their grid.

    A 3D file is a foreground probability ``p``; it becomes the two classes ``1 - p, p``.

    Raises:
        LesionsegError: Missing or unreadable file, wrong dimensions, non-finite values
            or values outside [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise LesionsegError("probability file not found", path)
    if not is_nifti_path(path):
        raise LesionsegError("not a NIfTI file name (expected .nii or .nii.gz)", path)
    try:
        image = nib.load(str(path))
        shape = image.shape
    except Exception as err:  # nibabel raises many types for bad files
        raise LesionsegError(f"cannot read as NIfTI ({type(err).__name__}: {err})", path) from None
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
        volume = load_nifti(path)
        fg = volume.data
        probs = np.stack([1.0 - fg, fg]).astype(np.float32)
        grid = volume.grid
    elif len(shape) == 4:
        if shape[3] < 2:
            raise LesionsegError(f"expected one map per class (≥ 2), found {shape[3]}", path)
        try:
            data = np.asarray(image.dataobj, dtype=np.float32)
        except Exception as err:
            raise LesionsegError(f"cannot read the voxel data ({err})", path) from None
        probs = np.ascontiguousarray(np.moveaxis(data, -1, 0))
        grid = Grid(
            tuple(int(s) for s in shape[:3]),
            np.asarray(image.affine, np.float64),
            image.header.copy(),
        )
    else:
        raise LesionsegError(f"expected a 3D or 4D probability volume, found shape {shape}", path)
    if not np.all(np.isfinite(probs)):
        raise LesionsegError("probabilities contain NaN or Inf values", path)
    low, high = float(probs.min()), float(probs.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise LesionsegError(
            f"values must be probabilities in [0, 1], found [{low:.4g}, {high:.4g}]", path
        )
    return np.clip(probs, 0.0, 1.0, out=probs), grid


def load_channels(paths: Sequence[str | Path], grid: Grid | None = None) -> tuple[np.ndarray, Grid]:
    """Image channels ``(C, X, Y, Z)`` float32 from 3D NIfTI files on one grid.

    Args:
        paths: One file per channel.
        grid: If given, every channel must lie on it (shape and affine).

    Raises:
        LesionsegError: No files, unreadable files, or channels on different grids.
    """
    if not paths:
        raise LesionsegError("give at least one image (--image)")
    volumes = [load_nifti(p) for p in paths]
    reference = grid or volumes[0].grid
    for volume in volumes:
        if not volume.grid.same_as(reference):
            raise LesionsegError(
                f"is on a different grid ({volume.grid.shape}) than the probabilities "
                f"({reference.shape}); resample it first",
                volume.path,
            )
    return np.stack([v.data for v in volumes]).astype(np.float32), volumes[0].grid


def zscore_channels(image: np.ndarray) -> np.ndarray:
    """Z-score each channel inside its non-zero voxels, unless it already is z-scored there.

    Voxels at 0 (outside the brain in skull-stripped data) stay 0.
    """
    out = np.array(image, dtype=np.float32, copy=True)
    for channel in out:
        inside = channel != 0
        if inside.sum() < 2:
            continue
        values = channel[inside].astype(np.float64)
        mean, std = float(values.mean()), float(values.std())
        if abs(mean) < _ZSCORE_TOLERANCE and abs(std - 1.0) < _ZSCORE_TOLERANCE:
            continue
        channel[inside] = ((values - mean) / (std if std > 1e-8 else 1.0)).astype(np.float32)
    return out
