"""Reflection along spatial axes (DeepMedic: sagittal, axis 0, p = 0.5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lesionseg.augment.base import Example, RandomTransform, SpatialTransform, Transform


class Flip(SpatialTransform):
    """Reverse the given spatial axes of every array in the example.

    Args:
        axes: Spatial axes to flip (0 = sagittal in canonical arrays).
        spatial_dims: Number of spatial axes of the example (3 for segments, 2 for slices).
    """

    def __init__(self, axes: Sequence[int], spatial_dims: int = 3):
        super().__init__(spatial_dims)
        self.axes = tuple(int(a) for a in axes)

    def apply(self, array: np.ndarray, first: int, is_image: bool) -> np.ndarray:
        """The array with ``axes`` reversed (exact for images and labels alike)."""
        axes = tuple(first + a for a in self.axes)
        return np.ascontiguousarray(np.flip(array, axis=axes))

    def __repr__(self) -> str:
        return f"Flip(axes={self.axes})"


class RandomFlip(RandomTransform):
    """Flip each of ``axes`` independently with probability ``p``.

    Args:
        axes: Candidate spatial axes (default: sagittal axis 0).
        p: Probability of flipping each axis.
        spatial_dims: Number of spatial axes of the examples.
    """

    def __init__(self, axes: Sequence[int] = (0,), p: float = 0.5, spatial_dims: int = 3):
        super().__init__(p=1.0)  # the per-axis probability is drawn in draw()
        self.axes = tuple(int(a) for a in axes)
        self.axis_p = float(p)
        if not 0.0 <= self.axis_p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.spatial_dims = spatial_dims

    def draw(self, rng: np.random.Generator, example: Example) -> Transform:
        """A :class:`Flip` of the axes whose coin came up."""
        chosen = [a for a in self.axes if rng.random() < self.axis_p]
        return Flip(chosen, self.spatial_dims)
