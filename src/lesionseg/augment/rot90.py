"""In-plane rotation by 0, 90, 180 or 270° (Brain SegNet's volume-level rotation).

Brain SegNet rotates "all slices ... with a same orientation, which is randomly
selected from {0, 90, 180, 270} degrees". A quarter turn only permutes voxels, so it
is done with :func:`numpy.rot90` (no interpolation): the image, the target and the
mask are rotated alike and exactly, and label maps keep their values and dtype.

The plane is that of two spatial axes, by default 0 and 1: the axial plane of
lesionseg's canonical ``(X, Y, Z)`` arrays, whose slice axis is 2; for 2D examples
``(C, H, W)`` the default is the slice itself. ``k`` quarter turns rotate from the
first axis of the plane towards the second, as :func:`numpy.rot90` does.

An odd number of quarter turns swaps the two in-plane sizes. Samplers stack examples
of one shape, so a quarter turn of a non-square plane is refused (ValueError) rather
than returning an example of another shape; half turns keep every shape and are
allowed. :class:`RandomRot90` refuses a non-square plane whatever it draws, so that
a recipe fails on its first example rather than on the first odd draw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from lesionseg.augment.base import (
    CHANNEL_KEYS,
    Example,
    RandomTransform,
    SpatialTransform,
    Transform,
)


def _check_axes(axes: tuple[int, ...], spatial_dims: int) -> None:
    if len(axes) != 2 or axes[0] == axes[1] or any(not 0 <= a < spatial_dims for a in axes):
        raise ValueError(f"axes {axes} must be two distinct axes of {spatial_dims} spatial axes")


class Rot90(SpatialTransform):
    """Rotate every spatial array of an example by ``k`` quarter turns in one plane.

    Args:
        k: Number of quarter turns (taken modulo 4; negative turns the other way).
        axes: The two spatial axes of the plane; rotation goes from the first towards
            the second (default 0 → 1, the axial plane of canonical arrays).
        spatial_dims: Number of spatial axes of the example (3 for segments, 2 for slices).

    Raises:
        ValueError: ``axes`` are not two distinct spatial axes.
    """

    def __init__(self, k: int, axes: Sequence[int] = (0, 1), spatial_dims: int = 3):
        super().__init__(spatial_dims)
        self.k = int(k) % 4
        self.axes = tuple(int(a) for a in axes)
        _check_axes(self.axes, self.spatial_dims)

    def planes(self, example: Example) -> Iterator[tuple[str, tuple[int, int]]]:
        """The in-plane sizes of each spatial array of ``example``, by key.

        Spatial arrays are chosen as :meth:`SpatialTransform.__call__` chooses them.
        """
        for key, array in example.items():
            if not isinstance(array, np.ndarray) or array.ndim < self.spatial_dims:
                continue
            first = array.ndim - self.spatial_dims
            if key not in CHANNEL_KEYS and first > 0:
                continue
            yield key, (array.shape[first + self.axes[0]], array.shape[first + self.axes[1]])

    def check(self, example: Example, quarter_turn: bool | None = None) -> None:
        """Raise if rotating would change the shape of an array of ``example``.

        Args:
            example: The example.
            quarter_turn: Check as for an odd ``k`` (True) or as for this ``k`` (None).

        Raises:
            ValueError: A quarter turn of a plane whose two sizes differ.
        """
        if quarter_turn is None:
            quarter_turn = self.k % 2 == 1
        if not quarter_turn:
            return  # half turns keep every shape
        for key, sizes in self.planes(example):
            if sizes[0] != sizes[1]:
                raise ValueError(
                    f"cannot rotate {key!r} by quarter turns in the plane of axes {self.axes}: "
                    f"it is {sizes[0]}×{sizes[1]}, not square (the shape would change); "
                    "crop square planes or leave rot90 out"
                )

    def apply(self, array: np.ndarray, first: int, is_image: bool) -> np.ndarray:
        """The array rotated by ``k`` quarter turns (exact for images and labels alike)."""
        plane = (first + self.axes[0], first + self.axes[1])
        if self.k % 2 and array.shape[plane[0]] != array.shape[plane[1]]:
            raise ValueError(
                f"cannot rotate a {array.shape[plane[0]]}×{array.shape[plane[1]]} plane "
                f"by {90 * self.k}°: not square (the shape would change)"
            )
        return np.ascontiguousarray(np.rot90(array, k=self.k, axes=plane))

    def __repr__(self) -> str:
        return f"Rot90(k={self.k}, axes={self.axes})"


class RandomRot90(RandomTransform):
    """Draw ``k`` uniformly in {0, 1, 2, 3}: a rotation by 0, 90, 180 or 270°.

    Args:
        axes: The two spatial axes of the plane (default 0 and 1, axial in canonical
            arrays; the slice itself for 2D examples).
        p: Probability of rotating an example (k = 0 is among the draws, as in the paper).
        spatial_dims: Number of spatial axes of the examples (3 for segments, 2 for slices).

    Raises:
        ValueError: ``axes`` are not two distinct spatial axes, or ``p`` is outside [0, 1].
    """

    def __init__(self, axes: Sequence[int] = (0, 1), p: float = 1.0, spatial_dims: int = 3):
        super().__init__(p)
        self.axes = tuple(int(a) for a in axes)
        self.spatial_dims = int(spatial_dims)
        _check_axes(self.axes, self.spatial_dims)  # now rather than at the first example

    def draw(self, rng: np.random.Generator, example: Example) -> Transform:
        """A :class:`Rot90` with ``k`` drawn from ``rng``.

        Raises:
            ValueError: The plane of an array of ``example`` is not square (whatever ``k``
                is drawn, so that the failure does not depend on the seed).
        """
        transform = Rot90(int(rng.integers(4)), self.axes, self.spatial_dims)
        transform.check(example, quarter_turn=True)
        return transform
