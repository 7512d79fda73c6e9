"""Boxes of a padded volume, cut from the unpadded volume.

A predictor feeds its model boxes (tiles, patches) of the volume padded by the
model's margins. Padding the whole volume first costs memory in proportion to the
*padded* volume, which can dwarf the volume itself: a 5000×5000×1 slab padded by the
tiny DeepMedic's 18-voxel margins (and rounded up to its multiple of 3) is 39 voxels
deep, 15.8 GB for 4 channels. :class:`PaddedVolume` gives the same boxes, value for
value, from the unpadded volume, so that memory follows the box.

Along each axis, padding is a lookup from padded position to source voxel: ``np.pad``
of ``arange(n)`` (−1 marking constant padding). ``np.pad`` pads one axis after the
other, and its modes ``edge``, ``reflect``, ``symmetric`` and ``wrap`` only copy
voxels, so a box of the padded volume is exactly the source indexed by the lookups of
the box's range on every axis, corners included; constant padding is zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: ``np.pad`` modes a :class:`PaddedVolume` reproduces ("constant" pads with zeros).
MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def source_index(length: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source voxel of every position of one padded axis.

    Args:
        length: Voxels along the axis before padding.
        before: Voxels added before.
        after: Voxels added after.
        mode: One of :data:`MODES`.

    Returns:
        ``(before + length + after,)`` int64 indices into the unpadded axis; −1 where
        ``mode`` is ``"constant"`` and the position lies in the padding.

    Raises:
        ValueError: Unknown mode, or negative widths.
    """
    if mode not in MODES:
        raise ValueError(f"padding mode {mode!r} is not one of {MODES}")
    if before < 0 or after < 0:
        raise ValueError(f"padding widths must be ≥ 0, got ({before}, {after})")
    # np.pad itself decides where each padded position comes from (it mirrors again and
    # again when a width exceeds the axis, and repeats the voxel of a one-voxel axis).
    extra = {"constant_values": -1} if mode == "constant" else {}
    return np.pad(np.arange(length, dtype=np.int64), (before, after), mode=mode, **extra)


class PaddedVolume:
    """``np.pad(image, widths, mode)`` of a channel-first image, without building it.

    Args:
        image: ``(C, *spatial)`` array; kept by reference, never copied whole.
        widths: ``np.pad`` widths, one ``(before, after)`` per axis of ``image``; the
            channel axis must get ``(0, 0)``.
        mode: One of :data:`MODES`.

    Raises:
        ValueError: Widths that do not match the image, pad the channels, or an unknown mode.
    """

    def __init__(self, image: np.ndarray, widths: Sequence[Sequence[int]], mode: str):
        widths = [tuple(int(w) for w in pair) for pair in widths]
        if len(widths) != image.ndim or widths[0] != (0, 0):
            raise ValueError(
                f"need (0, 0) for the channels and one width per spatial axis of an image "
                f"of shape {image.shape}, got {widths}"
            )
        self.image = image
        self.mode = mode
        self._sources = tuple(
            source_index(n, before, after, mode)
            for n, (before, after) in zip(image.shape[1:], widths[1:])
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of the padded volume."""
        return tuple(len(source) for source in self._sources)

    def _lookups(self, starts: np.ndarray, size: Sequence[int]) -> list[np.ndarray]:
        """Per axis, the ``(n, t)`` source voxels of ``n`` boxes (−1: constant padding)."""
        if (starts < 0).any() or (starts + np.asarray(size) > self.shape).any():
            raise ValueError(
                f"boxes of size {tuple(size)} reach outside the padded shape {self.shape}"
            )
        return [
            source[starts[:, axis, None] + np.arange(t)]
            for axis, (source, t) in enumerate(zip(self._sources, size))
        ]

    def box(self, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """One box of the padded volume: what ``padded[:, start : start + size]`` gives.

        Costs about a copy of the box, whatever its size: use it for large boxes
        (tiles); :meth:`boxes` gathers many small ones (patches) faster.

        Args:
            start: Box start in padded coordinates.
            size: Spatial size; the box must lie inside :attr:`shape`.

        Returns:
            ``(C, *size)`` array of ``image``'s dtype; a view of ``image`` when the box
            lies inside the volume (no padding).

        Raises:
            ValueError: A box that reaches outside the padded volume.
        """
        lookups = [index[0] for index in self._lookups(np.asarray([start]), size)]
        # Cut the source's bounding box of the lookups first (a view), so that each np.take
        # below copies about a box, never a whole plane of the volume; an axis whose
        # lookup is a run of consecutive voxels (inside the volume) needs no take at all.
        sources = [np.maximum(index, 0) for index in lookups]
        out = self.image[(slice(None), *(slice(i.min(), i.max() + 1) for i in sources))]
        for axis, index in enumerate(sources, start=1):
            if (np.diff(index) != 1).any():
                out = np.take(out, index - index.min(), axis=axis)
        if self.mode == "constant" and any((index < 0).any() for index in lookups):
            out = np.array(out)  # never zero the caller's image through a view
            for axis, index in enumerate(lookups, start=1):
                out[(slice(None),) * axis + (index < 0,)] = 0
        return out

    def boxes(
        self, starts: Sequence[Sequence[int]] | np.ndarray, size: Sequence[int]
    ) -> np.ndarray:
        """Many boxes of the padded volume at once, stacked.

        One advanced-indexing pass gathers every box straight into the result: no
        Python loop over the boxes, but several times the cost of a copy per voxel,
        so use it for many small boxes (patches) and :meth:`box` for large ones.

        Args:
            starts: ``(n, D)`` box starts in padded coordinates.
            size: Spatial size of every box; each box must lie inside :attr:`shape`.

        Returns:
            ``(n, C, *size)`` C-contiguous array of ``image``'s dtype.

        Raises:
            ValueError: A box that reaches outside the padded volume.
        """
        starts = np.asarray(starts, dtype=np.int64).reshape(-1, len(self._sources))
        n, dims = len(starts), len(size)
        # One index array per axis, shaped to broadcast to (n, C, *size).
        lookups = []
        for axis, index in enumerate(self._lookups(starts, size)):
            shape = [n, 1] + [1] * dims
            shape[axis + 2] = size[axis]
            lookups.append(index.reshape(shape))
        channels = np.arange(self.image.shape[0]).reshape(1, -1, *[1] * dims)
        out = self.image[(channels, *(np.maximum(index, 0) for index in lookups))]
        if self.mode == "constant":
            outside = np.zeros((n, 1, *size), dtype=bool)
            for index in lookups:
                outside |= index < 0
            np.copyto(out, 0, where=outside)
        return out
