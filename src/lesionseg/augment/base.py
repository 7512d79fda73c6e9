"""Transforms of training examples, each as a random part and a deterministic part.

As in TorchIO, a ``Random…`` transform only draws parameters (from a numpy
``Generator`` it is handed, so every choice flows from the run's seed) and
returns the deterministic transform that applies them. The deterministic
transform can be re-applied, inverted or logged.

An example is a dict of arrays: ``"image"`` is channel-first ``(C, *spatial)``;
``"target"`` (and ``"mask"`` when present) is ``(*spatial)`` without channels.
Spatial axis 0 is the sagittal axis (left→right) in lesionseg's canonical arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

Example = dict[str, np.ndarray]

#: Keys holding channel-first arrays; other array keys have no channel axis.
CHANNEL_KEYS = ("image",)


class Transform(ABC):
    """A deterministic transform with fixed parameters."""

    @abstractmethod
    def __call__(self, example: Example) -> Example:
        """Return the transformed example (a new dict; input arrays are not modified)."""


class SpatialTransform(Transform):
    """A transform of the spatial axes, applied alike to every spatial array of an example.

    Spatial arrays are the channel-first ones of :data:`CHANNEL_KEYS` and the arrays of
    exactly ``spatial_dims`` axes; other entries (e.g. per-example metadata) pass through.

    Args:
        spatial_dims: Number of spatial axes of the example (3 for segments, 2 for slices).
    """

    def __init__(self, spatial_dims: int):
        self.spatial_dims = int(spatial_dims)

    @abstractmethod
    def apply(self, array: np.ndarray, first: int, is_image: bool) -> np.ndarray:
        """Transform one array whose spatial axes start at axis ``first``.

        Args:
            array: The array (not modified).
            first: Index of its first spatial axis (1 for a channel-first image).
            is_image: Whether it is an image (interpolated) rather than labels/mask.
        """

    def __call__(self, example: Example) -> Example:
        """Return the example with every spatial array transformed."""
        out = dict(example)
        for key, array in example.items():
            if not isinstance(array, np.ndarray) or array.ndim < self.spatial_dims:
                continue
            first = array.ndim - self.spatial_dims
            is_image = key in CHANNEL_KEYS
            if not is_image and first > 0:
                continue  # not a spatial array (e.g. per-example metadata)
            out[key] = self.apply(array, first, is_image)
        return out


class RandomTransform(ABC):
    """Draws the parameters of a :class:`Transform`.

    Args:
        p: Probability of applying the transform to an example.
    """

    def __init__(self, p: float = 1.0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    @abstractmethod
    def draw(self, rng: np.random.Generator, example: Example) -> Transform:
        """The deterministic transform with parameters drawn from ``rng``."""

    def sample(self, rng: np.random.Generator, example: Example) -> Transform | None:
        """Decide with probability ``p`` whether to transform, then draw parameters."""
        if rng.random() >= self.p:
            return None
        return self.draw(rng, example)

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        """Apply the transform with freshly drawn parameters (or return the example unchanged)."""
        transform = self.sample(rng, example)
        return example if transform is None else transform(example)


class Compose:
    """Random transforms applied in order.

    Args:
        transforms: The random transforms.
    """

    def __init__(self, transforms: Sequence[RandomTransform]):
        self.transforms = list(transforms)

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        """Apply each transform in turn."""
        for transform in self.transforms:
            example = transform(example, rng)
        return example

    def __len__(self) -> int:
        return len(self.transforms)
