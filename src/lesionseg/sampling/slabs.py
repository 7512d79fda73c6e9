"""Slabs of consecutive slices for 3D networks that keep the slice axis (Brain SegNet).

A subject's slices along ``axis`` are cut into non-overlapping slabs of ``depth`` slices
(the last one zero-padded), and an epoch enumerates every slab of every subject once, in
an order shuffled by the seed (``order: enumerate``; ``order: draw`` draws slabs
uniformly). In the plane, a window of ``size`` is cut at random, but so that it holds the
whole lesion of the slab when there is one (Brain SegNet's augmentation (iv): "random
crops that keep the whole lesion"); a lesion larger than the window gets a window inside
the lesion's box, as close to containing it as the window allows.

Re-scaling (Brain SegNet's augmentation (iii), a factor in ``rescale``, the same in both
in-plane axes) happens *before* the crop, so that the crop still holds the lesion: the
window is chosen in the re-scaled plane and only its pixels are interpolated (linear for
the image, nearest for labels, which stay integers). It is applied to an example with the
sampler's ``augment_probability``, like the other augmentations, so a curriculum stage
without augmentation sees the original scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from lesionseg.models.geometry import ModelGeometry
from lesionseg.sampling.base import Example, Sampler, SubjectArrays
from lesionseg.sampling.crop import crop


class SlabSampler(Sampler):
    """Non-overlapping slabs along the slice axis, in-plane crops that keep the lesion.

    Args:
        subjects: Preprocessed training subjects (with labels).
        geometry: The model's geometry (3D, same-padded).
        depth: Slices per slab (12 for BRATS, 7 for ISLES in the paper).
        size: In-plane window (int or two ints; 128 or 96 in the paper), rounded up to the
            model's ``size_multiple``.
        axis: The slice axis (default: the model's ``geometry.slice_axis``).
        rescale: ``[low, high]`` in-plane scale factors drawn uniformly for an augmented
            example (the paper: [0.5, 1.2]), or None.
        pad_value: Image value outside the volume (0: the brain mean after z-scoring).
        pad_label: Label value outside the volume.
        **kwargs: Passed to :class:`~lesionseg.sampling.base.Sampler` (augment, order, ...).

    Raises:
        ValueError: A 2D model, a subject without labels, or a bad option.
    """

    def __init__(
        self,
        subjects: Sequence[SubjectArrays],
        geometry: ModelGeometry,
        *,
        depth: int,
        size: int | Sequence[int],
        axis: int | None = None,
        rescale: Sequence[float] | None = None,
        pad_value: float = 0.0,
        pad_label: int = 0,
        **kwargs: Any,
    ):
        super().__init__(subjects, geometry, **kwargs)
        if geometry.spatial_dims != 3:
            raise ValueError("the slabs sampler serves 3D models (use slices for 2D ones)")
        axis = geometry.slice_axis if axis is None else axis
        if isinstance(axis, bool) or axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive number of slices, got {depth!r}")
        sizes = [size, size] if isinstance(size, int) else list(size)
        if len(sizes) != 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"size must be one or two positive sizes, got {size!r}")
        if rescale is not None:
            low, high = (float(v) for v in rescale)
            if not 0 < low <= high:
                raise ValueError(f"rescale must be [low, high] with 0 < low <= high, got {rescale}")
            rescale = (low, high)
        self.axis = int(axis)
        self.plane = tuple(a for a in range(3) if a != self.axis)
        multiple = geometry.size_multiple
        self.size = tuple(
            -(-int(s) // multiple[a]) * multiple[a] for s, a in zip(sizes, self.plane)
        )
        self.depth = -(-depth // multiple[self.axis]) * multiple[self.axis]
        self.rescale = rescale
        self.pad_value = float(pad_value)
        self.pad_label = int(pad_label)
        for s in self.subjects:
            if s.label is None:
                raise ValueError(f"subject {s.id!r} has no label map; training needs labels")
        # (subject, first slice) of every slab, and each slab's in-plane lesion box
        self._slabs: list[tuple[int, int]] = []
        self._lesion_box: list[tuple[np.ndarray, np.ndarray] | None] = []
        for index, subject in enumerate(self.subjects):
            label = np.moveaxis(np.asarray(subject.label), self.axis, -1) > 0
            for first in range(0, label.shape[-1], depth):
                self._slabs.append((index, first))
                found = np.argwhere(label[..., first : first + depth].any(-1))
                box = (found.min(0), found.max(0) + 1) if len(found) else None
                self._lesion_box.append(box)

    def items(self) -> int:
        """Slabs of every subject."""
        return len(self._slabs)

    def example_shapes(self) -> dict[str, tuple[int, ...]]:
        """``image``: ``(C, *spatial)`` with the slab on its axis; ``target``: ``spatial``."""
        spatial = [0, 0, 0]
        spatial[self.axis] = self.depth
        for a, s in zip(self.plane, self.size):
            spatial[a] = s
        channels = self.subjects[0].image.shape[0]
        return {"image": (channels, *spatial), "target": tuple(spatial)}

    def draw(self, rng: np.random.Generator) -> Example:
        """A slab drawn uniformly."""
        return self.example_at(int(rng.integers(len(self._slabs))), rng)

    def example_at(self, index: int, rng: np.random.Generator) -> Example:
        """Slab ``index`` with a random window that keeps its lesion (re-scaled or not)."""
        s, first = self._slabs[index]
        subject = self.subjects[s]
        plane_shape = np.array([subject.label.shape[a] for a in self.plane])
        scale = 1.0
        if self.rescale is not None and rng.random() < self.augment_probability:
            scale = float(rng.uniform(*self.rescale))
        box = self._lesion_box[index]
        scaled = None if box is None else (box[0] * scale, box[1] * scale)
        start = _window_start(rng, np.ceil(plane_shape * scale), np.array(self.size), scaled)
        image = _slab(np.asarray(subject.image), self.axis, first, self.depth, True)
        label = _slab(np.asarray(subject.label), self.axis, first, self.depth, False)
        if scale == 1.0:
            box_start = (*start, 0)
            window = (*self.size, self.depth)
            image = crop(image, box_start, window, self.pad_value, np.float32)
            target = crop(label, box_start, window, self.pad_label, np.int64)
        else:
            image = _resampled(image, start, self.size, scale, 1, self.pad_value)
            target = _resampled(label, start, self.size, scale, 0, self.pad_label)
            image, target = image.astype(np.float32), target.astype(np.int64)
        # back from (…, in-plane, in-plane, slab) to the array's own axis order
        return {
            "image": np.moveaxis(image, -1, 1 + self.axis),
            "target": np.moveaxis(target, -1, self.axis),
        }


def _slab(array: np.ndarray, axis: int, first: int, depth: int, channels: bool) -> np.ndarray:
    """Slices ``first … first + depth − 1`` along ``axis``, moved last, zero beyond the end."""
    moved = np.moveaxis(array, axis + 1 if channels else axis, -1)
    end = min(first + depth, moved.shape[-1])
    part = moved[..., first:end]
    if end - first < depth:
        pad = [(0, 0)] * (part.ndim - 1) + [(0, depth - (end - first))]
        part = np.pad(part, pad)
    return part


def _window_start(rng, plane: np.ndarray, size: np.ndarray, lesion) -> np.ndarray:
    """In-plane start of a window of ``size`` in a plane of ``plane`` pixels.

    Without a lesion: uniform over the positions inside the plane (or over those covering
    it, when the plane is smaller). With one (box ``[lo, hi)``): uniform over the starts
    whose window holds the box; when the box is larger than the window, over the starts
    whose window lies inside the box.
    """
    if lesion is None:
        low = np.minimum(0, plane - size)
        high = np.maximum(0, plane - size)
    else:
        lo, hi = np.floor(lesion[0]), np.ceil(lesion[1])
        fits = hi - lo <= size
        low = np.where(fits, hi - size, lo)
        high = np.where(fits, lo, hi - size)
    return np.array([int(rng.integers(int(a), int(b) + 1)) for a, b in zip(low, high)])


def _resampled(array, start, size, scale, order, fill) -> np.ndarray:
    """The window ``start … start + size`` of ``array`` re-scaled in-plane by ``scale``.

    ``array`` is ``(…, P0, P1, depth)``; output pixel ``i`` of the re-scaled plane comes
    from source position ``i / scale`` (pixel centres aligned at the origin).
    """
    lead = array.shape[:-3]
    flat = array.reshape(-1, *array.shape[-3:])
    out = np.empty((len(flat), *size, array.shape[-1]), np.float64 if order else array.dtype)
    rows = (np.arange(size[0]) + start[0]) / scale
    cols = (np.arange(size[1]) + start[1]) / scale
    depth = np.arange(array.shape[-1], dtype=np.float64)
    grid = np.meshgrid(rows, cols, depth, indexing="ij")
    for i, volume in enumerate(flat):
        out[i] = ndimage.map_coordinates(volume, grid, order=order, mode="constant", cval=fill)
    return out.reshape(*lead, *size, array.shape[-1])
