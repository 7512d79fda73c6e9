"""Per-channel intensity shift I + r·σ, r ~ N(0, std) (DeepMedic, TBI setting: std 0.1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lesionseg.augment.base import Example, RandomTransform, Transform


class IntensityShift(Transform):
    """Add a fixed offset to each image channel.

    Args:
        offsets: One offset per channel (already multiplied by σ).
    """

    def __init__(self, offsets: Sequence[float]):
        self.offsets = np.asarray(offsets, dtype=np.float32)

    def __call__(self, example: Example) -> Example:
        """Return the example with shifted image channels."""
        image = example["image"]
        if image.shape[0] != len(self.offsets):
            raise ValueError(f"{len(self.offsets)} offsets for {image.shape[0]} channels")
        shape = (-1,) + (1,) * (image.ndim - 1)
        out = dict(example)
        out["image"] = (image + self.offsets.reshape(shape)).astype(image.dtype, copy=False)
        return out

    def __repr__(self) -> str:
        return f"IntensityShift(offsets={self.offsets.tolist()})"


class RandomIntensityShift(RandomTransform):
    """Draw r ~ N(0, std) per channel and shift the channel by r·σ.

    Args:
        std: Standard deviation of r (paper: 0.1).
        sigma: σ of each channel: a number (default 1, the brain standard deviation of a
            z-scored image, which is how lesionseg stores images), or ``"example"`` for the
            standard deviation of the channel within the example.
        p: Probability of shifting an example.
    """

    def __init__(self, std: float = 0.1, sigma: float | str = 1.0, p: float = 1.0):
        super().__init__(p)
        if std < 0:
            raise ValueError(f"std must be ≥ 0, got {std}")
        if isinstance(sigma, str) and sigma != "example":
            raise ValueError(f"sigma must be a number or 'example', got {sigma!r}")
        self.std = float(std)
        self.sigma = sigma

    def draw(self, rng: np.random.Generator, example: Example) -> Transform:
        """An :class:`IntensityShift` with one drawn offset per channel."""
        image = example["image"]
        r = rng.normal(0.0, self.std, size=image.shape[0])
        if self.sigma == "example":
            sigma = image.reshape(image.shape[0], -1).std(axis=1)
        else:
            sigma = np.full(image.shape[0], float(self.sigma))
        return IntensityShift(r * sigma)
