"""Intensity amplification by a factor in [0.8, 1.2], one per slice (Brain SegNet).

Brain SegNet's "slice-level augmentation" multiplies the voxel intensities of each
slice by its own factor drawn uniformly in [0.8, 1.2]; its 3D examples are stacks of
slices (12×128×128 crops) cut along the slice axis. In lesionseg's canonical
``(X, Y, Z)`` arrays the slices are the axial planes, so the slice axis is spatial
axis 2 (Z) by default and the in-plane axes are 0 and 1. Only the image is scaled:
labels and masks are untouched, so they keep their values and dtype.

A 2D example (``spatial_dims=2``, e.g. from the slices sampler) is itself one slice,
so "per slice" means one factor for the whole example, shared by all of its channels
(including the neighbouring slices a 2.5D stack carries as channels); ``axis`` is
not used then.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lesionseg.augment.base import Example, RandomTransform, Transform


class IntensityScale(Transform):
    """Multiply the image by fixed factors: one per slice along ``axis``, or one in all.

    Args:
        factors: One factor per slice along ``axis`` (in slice order), or a single
            factor for the whole example when ``axis`` is None. All must be > 0.
        axis: Spatial axis the slices are taken along (2 = axial in canonical arrays),
            or None to scale the whole example by ``factors[0]``.
        spatial_dims: Number of spatial axes of the example (3 for segments, 2 for slices).

    Raises:
        ValueError: A non-positive or non-finite factor, several factors without an
            ``axis``, or an ``axis`` outside the spatial axes.
    """

    def __init__(
        self, factors: float | Sequence[float], axis: int | None = 2, spatial_dims: int = 3
    ):
        self.factors = np.atleast_1d(np.asarray(factors, dtype=np.float64))
        if self.factors.ndim != 1 or self.factors.size == 0:
            raise ValueError(f"factors must be a number or a list of numbers, got {factors!r}")
        # A non-positive factor would invert or erase the contrast, not amplify it.
        if not np.all(np.isfinite(self.factors)) or np.any(self.factors <= 0):
            raise ValueError(f"factors must be finite and > 0, got {self.factors.tolist()}")
        self.spatial_dims = int(spatial_dims)
        self.axis = None if axis is None else int(axis)
        if self.axis is None and self.factors.size != 1:
            raise ValueError(f"{self.factors.size} factors need an axis to lay them along")
        if self.axis is not None and not 0 <= self.axis < self.spatial_dims:
            raise ValueError(f"axis {self.axis} is not one of {self.spatial_dims} spatial axes")

    def __call__(self, example: Example) -> Example:
        """Return the example with its image scaled (other arrays are the input's).

        Raises:
            ValueError: The number of factors is not the number of slices along ``axis``.
        """
        image = example["image"]
        first = image.ndim - self.spatial_dims  # channel-first: spatial axes follow C
        shape = [1] * image.ndim
        if self.axis is not None:
            slices = image.shape[first + self.axis]
            if slices != self.factors.size:
                raise ValueError(
                    f"{self.factors.size} factors for {slices} slices along axis {self.axis}"
                )
            shape[first + self.axis] = slices
        out = dict(example)
        out["image"] = (image * self.factors.reshape(shape)).astype(image.dtype, copy=False)
        return out

    def __repr__(self) -> str:
        factors = np.round(self.factors, 4).tolist()
        return f"IntensityScale(factors={factors}, axis={self.axis})"


class RandomIntensityScale(RandomTransform):
    """Draw intensity factors uniformly in [``low``, ``high``]: one per slice, or one in all.

    Args:
        low: Smallest factor (Brain SegNet: 0.8); must be > 0.
        high: Largest factor (Brain SegNet: 1.2); must be ≥ ``low``.
        axis: Spatial axis the slices are taken along (default 2, axial in canonical
            ``(X, Y, Z)`` arrays). Not used for 2D examples, which are one slice each.
        per_slice: Draw one factor per slice along ``axis`` (the paper); False draws one
            factor for the whole example.
        p: Probability of scaling an example.
        spatial_dims: Number of spatial axes of the examples (3 for segments, 2 for slices).

    Raises:
        ValueError: ``low`` ≤ 0, ``low`` > ``high``, ``p`` outside [0, 1], or (3D) an
            ``axis`` outside the spatial axes.
    """

    def __init__(
        self,
        low: float = 0.8,
        high: float = 1.2,
        axis: int = 2,
        per_slice: bool = True,
        p: float = 1.0,
        spatial_dims: int = 3,
    ):
        super().__init__(p)
        if not 0 < low <= high or not np.isfinite(high):
            raise ValueError(f"need 0 < low ≤ high (finite), got low={low}, high={high}")
        self.low = float(low)
        self.high = float(high)
        self.per_slice = bool(per_slice)
        self.spatial_dims = int(spatial_dims)
        # A 2D example is one slice: its per-slice factor is a whole-example factor.
        self.axis = int(axis) if self.per_slice and self.spatial_dims > 2 else None
        if self.axis is not None and not 0 <= self.axis < self.spatial_dims:
            raise ValueError(f"axis {self.axis} is not one of {self.spatial_dims} spatial axes")

    def draw(self, rng: np.random.Generator, example: Example) -> Transform:
        """An :class:`IntensityScale` with one drawn factor per slice (or one in all)."""
        if self.axis is None:
            return IntensityScale(rng.uniform(self.low, self.high), None, self.spatial_dims)
        image = example["image"]
        slices = image.shape[image.ndim - self.spatial_dims + self.axis]
        factors = rng.uniform(self.low, self.high, size=slices)
        return IntensityScale(factors, self.axis, self.spatial_dims)
