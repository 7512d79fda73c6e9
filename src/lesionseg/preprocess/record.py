"""The record of what preprocessing did to a subject, and its inverse.

A record is plain JSON: it travels with cached subjects and trained models, and
:meth:`PreprocessRecord.invert` maps any array computed on the preprocessed grid
(labels, probabilities, images) back onto the subject's original grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import nibabel as nib
import numpy as np

from lesionseg.data.nifti import Grid, Reorientation
from lesionseg.preprocess.crop import uncrop
from lesionseg.preprocess.resample import resample_to_shape


@dataclass
class PreprocessRecord:
    """Steps applied to one subject, enough to invert them.

    Attributes:
        original_shape: Shape of the stored input image.
        original_affine: Its voxel-to-world affine.
        qform_code: The input header's qform code.
        sform_code: The input header's sform code.
        canonical_shape: Shape after reorientation to RAS.
        crop_box: Per axis ``[start, stop)`` of the crop in the canonical array.
        cropped_shape: Shape after cropping (before resampling).
        resampled_shape: Final shape (after resampling; equals cropped_shape if none).
        spacing: Final voxel spacing in mm.
        affine: Voxel-to-world affine of the final (preprocessed) grid.
        channel_stats: Per channel (mean, SD) used by the z-score.
        steps: Names of the steps applied, in order.
    """

    original_shape: list[int]
    original_affine: list[list[float]]
    qform_code: int
    sform_code: int
    canonical_shape: list[int]
    crop_box: list[list[int]]
    cropped_shape: list[int]
    resampled_shape: list[int]
    spacing: list[float]
    affine: list[list[float]]
    channel_stats: list[list[float]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    _grid: Grid | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        """JSON-serialisable dict (without the in-memory header)."""
        data = asdict(self)
        data.pop("_grid")
        return data

    @classmethod
    def from_json(cls, data: dict) -> PreprocessRecord:
        """Rebuild a record saved with :meth:`to_json`."""
        return cls(**{k: v for k, v in data.items() if not k.startswith("_")})

    @property
    def original_grid(self) -> Grid:
        """The input's grid; with the full header when made in this process."""
        if self._grid is not None:
            return self._grid
        affine = np.asarray(self.original_affine, dtype=np.float64)
        header = nib.Nifti1Header()
        header.set_data_shape(self.original_shape)
        header.set_qform(affine, code=self.qform_code)
        header.set_sform(affine, code=self.sform_code)
        return Grid(tuple(self.original_shape), affine, header)

    @property
    def reorientation(self) -> Reorientation:
        """The reorientation from the input's array to canonical RAS."""
        return Reorientation.for_grid(self.original_grid)

    def invert(
        self, array: np.ndarray, is_label: bool = False, fill: float | Sequence[float] = 0
    ) -> np.ndarray:
        """Map an array on the preprocessed grid back onto the original grid.

        Args:
            array: ``(X, Y, Z)`` or channel-first ``(K, X, Y, Z)`` on the preprocessed grid.
            is_label: Nearest-neighbour resampling (labels) instead of linear.
            fill: Value outside the crop box: one number, or one per channel (e.g.
                1 for the background probability, 0 for the others).

        Returns:
            ``(X, Y, Z)`` or ``(X, Y, Z, K)`` in the input's stored orientation, ready
            for :func:`~lesionseg.data.nifti.save_nifti` on :attr:`original_grid`.
        """
        if tuple(array.shape[-3:]) != tuple(self.resampled_shape):
            raise ValueError(
                f"array shape {array.shape} is not the preprocessed shape {self.resampled_shape}"
            )
        restored = resample_to_shape(array, self.cropped_shape, order=0 if is_label else 1)
        box = tuple(slice(a, b) for a, b in self.crop_box)
        if restored.ndim == 4 and not np.isscalar(fill):
            full = np.stack(
                [uncrop(c, box, self.canonical_shape, fill=f) for c, f in zip(restored, fill)]
            )
        else:
            full = uncrop(restored, box, self.canonical_shape, fill=float(np.asarray(fill).flat[0]))
        if full.ndim == 4:
            full = np.moveaxis(full, 0, -1)
        return self.reorientation.invert(full)
