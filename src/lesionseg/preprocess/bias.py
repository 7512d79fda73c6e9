"""Optional N4 bias-field correction with SimpleITK."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def n4_correct(
    channel: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    shrink: int = 4,
    iterations: int = 50,
) -> np.ndarray:
    """Remove a smooth multiplicative bias field from one channel (N4ITK).

    The field is estimated on a copy shrunk by ``shrink`` (speed) and applied at
    full resolution, as SimpleITK's examples do.

    Args:
        channel: ``(X, Y, Z)`` intensities (non-negative).
        mask: Brain mask where the field is estimated.
        spacing: Voxel size in mm.
        shrink: Down-sampling factor for the estimation.
        iterations: Iterations per fitting level (4 levels).
    """
    # SimpleITK arrays are (z, y, x): transpose so that spacing stays with its axis.
    image = sitk.GetImageFromArray(np.clip(channel, 0, None).astype(np.float32).T)
    image.SetSpacing(tuple(float(s) for s in spacing))
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8).T)
    mask_image.CopyInformation(image)
    small = sitk.Shrink(image, [shrink] * 3)
    small_mask = sitk.Shrink(mask_image, [shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([iterations] * 4)
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    corrected = image / sitk.Exp(log_field)
    return sitk.GetArrayFromImage(corrected).T.astype(np.float32)
