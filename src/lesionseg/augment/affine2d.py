"""In-plane affine warp: rotation, zoom and shift in one resampling (D-UNet's augmentation).

The D-UNet script augments slices with Keras' ``ImageDataGenerator(rotation_range=20,
width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.2, horizontal_flip=True)``:
an angle uniform in ±20°, a shift uniform in ±10 % of each side, a zoom factor per
axis uniform in [0.8, 1.2] (drawn independently per axis, as Keras does), applied
about the slice centre with linear interpolation and edge replication
(``fill_mode="nearest"``). Here the three are composed into one matrix and applied
with :func:`scipy.ndimage.affine_transform` (one interpolation, not three). Labels
are resampled with nearest neighbour, so they keep their values. The horizontal
flip is the ``flip`` transform (exact, no resampling).

Coordinates: output pixel ``o`` reads input position ``A (o − c) + c + t`` with
``A = R(θ) · diag(z)``, ``c`` the centre of the slice and ``t`` the shift in pixels;
so a zoom factor above 1 shrinks the content (Keras' convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from lesionseg.augment.base import Example, RandomTransform, SpatialTransform, Transform


def affine_matrix(rotation: float, zoom: Sequence[float]) -> np.ndarray:
    """``R(θ) · diag(zoom)`` for ``rotation`` in degrees (2×2)."""
    theta = np.deg2rad(float(rotation))
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]]) @ np.diag([float(z) for z in zoom])


class Affine2D(SpatialTransform):
    """Warp the two in-plane axes of every spatial array of an example.

    Args:
        rotation: Angle in degrees.
        zoom: Zoom factor per in-plane axis (>1 shrinks the content).
        shift: Shift per in-plane axis in pixels.
        spatial_dims: Spatial axes of the example: 2 (slices), or 3 to warp every plane
            along the remaining axis alike.
        axes: The two spatial axes of the plane (default the first two).
        order: Spline order of the image interpolation (1 = linear, as Keras).
        mode: How positions outside the slice are filled (``scipy.ndimage`` modes;
            ``"nearest"`` replicates the edge, as Keras' default).
        cval: Fill value of ``mode="constant"``.
    """

    def __init__(
        self,
        rotation: float = 0.0,
        zoom: Sequence[float] = (1.0, 1.0),
        shift: Sequence[float] = (0.0, 0.0),
        spatial_dims: int = 2,
        axes: Sequence[int] = (0, 1),
        order: int = 1,
        mode: str = "nearest",
        cval: float = 0.0,
    ):
        self.rotation = float(rotation)
        self.zoom = tuple(float(z) for z in zoom)
        self.shift = tuple(float(t) for t in shift)
        if len(self.zoom) != 2 or len(self.shift) != 2:
            raise ValueError("zoom and shift need one value per in-plane axis (2)")
        if any(z <= 0 for z in self.zoom):
            raise ValueError(f"zoom factors must be > 0, got {self.zoom}")
        super().__init__(spatial_dims)
        self.axes = tuple(int(a) for a in axes)
        if (
            self.spatial_dims not in (2, 3)
            or len(set(self.axes)) != 2
            or any(not 0 <= a < self.spatial_dims for a in self.axes)
        ):
            raise ValueError(
                f"axes {self.axes} must be two distinct axes of {self.spatial_dims} spatial axes"
            )
        self.order = int(order)
        self.mode = mode
        self.cval = float(cval)

    def _warp(self, plane_first: np.ndarray, order: int, cval: float) -> np.ndarray:
        """Warp ``(..., H, W)`` arrays plane by plane."""
        h, w = plane_first.shape[-2:]
        matrix = affine_matrix(self.rotation, self.zoom)
        centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
        offset = centre - matrix @ centre + np.asarray(self.shift)
        flat = plane_first.reshape(-1, h, w)
        out = np.empty(flat.shape, dtype=np.float32 if order > 0 else flat.dtype)
        for k, plane in enumerate(flat):
            source = plane.astype(np.float32) if order > 0 else plane
            ndimage.affine_transform(
                source, matrix, offset, output=out[k], order=order, mode=self.mode, cval=cval
            )
        return out.reshape(plane_first.shape)

    def apply(self, array: np.ndarray, first: int, is_image: bool) -> np.ndarray:
        """The warped array: images interpolated, labels nearest-neighbour."""
        plane = [first + a for a in self.axes]
        rest = [a for a in range(array.ndim) if a not in plane]
        moved = np.transpose(array, rest + plane)  # (..., H, W)
        order = self.order if is_image else 0
        cval = self.cval if is_image else 0.0
        warped = self._warp(np.ascontiguousarray(moved), order, cval)
        if is_image:
            warped = warped.astype(array.dtype, copy=False)
        return np.ascontiguousarray(np.transpose(warped, np.argsort(rest + plane)))

    def __repr__(self) -> str:
        return f"Affine2D(rotation={self.rotation:.3g}, zoom={self.zoom}, shift={self.shift})"


class RandomAffine2D(RandomTransform):
    """Draw an :class:`Affine2D` as Keras' ``ImageDataGenerator`` does.

    Args:
        rotation: Angles are uniform in ±``rotation`` degrees (D-UNet: 20).
        zoom: Zoom factors are uniform in [1 − zoom, 1 + zoom], independently per axis
            (D-UNet: 0.2).
        shift: Shifts are uniform in ±``shift`` × the side, per axis (D-UNet: 0.1).
        isotropic_zoom: Draw one zoom factor for both axes instead.
        p: Probability of warping an example.
        spatial_dims: Spatial axes of the examples (2 for slices).
        axes: The two spatial axes of the plane.
        order: Spline order of the image interpolation.
        mode: Fill mode outside the slice (``scipy.ndimage``).
        cval: Fill value of ``mode="constant"``.
    """

    def __init__(
        self,
        rotation: float = 20.0,
        zoom: float = 0.2,
        shift: float = 0.1,
        isotropic_zoom: bool = False,
        p: float = 1.0,
        spatial_dims: int = 2,
        axes: Sequence[int] = (0, 1),
        order: int = 1,
        mode: str = "nearest",
        cval: float = 0.0,
    ):
        super().__init__(p)
        if rotation < 0 or shift < 0 or not 0 <= zoom < 1:
            raise ValueError(
                f"need rotation ≥ 0, shift ≥ 0 and 0 ≤ zoom < 1, got {rotation}, {shift}, {zoom}"
            )
        if mode not in (
            "reflect",
            "grid-mirror",
            "constant",
            "grid-constant",
            "nearest",
            "mirror",
            "grid-wrap",
            "wrap",
        ):
            raise ValueError(f"unknown fill mode {mode!r}")
        self.rotation = float(rotation)
        self.zoom = float(zoom)
        self.shift = float(shift)
        self.isotropic_zoom = bool(isotropic_zoom)
        self.options = dict(
            spatial_dims=spatial_dims, axes=tuple(axes), order=order, mode=mode, cval=cval
        )
        Affine2D(**self.options)  # validate axes / dims now rather than at the first example

    def draw(self, rng: np.random.Generator, example: Example) -> Transform:
        """An :class:`Affine2D` with parameters drawn from ``rng``."""
        dims = self.options["spatial_dims"]
        sides = [example["image"].shape[-dims + a] for a in self.options["axes"]]
        angle = rng.uniform(-self.rotation, self.rotation)
        if self.isotropic_zoom:
            zoom = (rng.uniform(1 - self.zoom, 1 + self.zoom),) * 2
        else:
            zoom = tuple(rng.uniform(1 - self.zoom, 1 + self.zoom, size=2))
        shift = tuple(rng.uniform(-self.shift, self.shift, size=2) * np.asarray(sides))
        return Affine2D(angle, zoom, shift, **self.options)
