"""2D slices and 2.5D slice stacks for slice-based models (D-UNet, the 2D and "3D" U-Nets).

An example is one target slice ``i`` along ``axis`` (default 2, axial in lesionseg's
RAS arrays). Its input stacks the slices ``i − before … i + after`` given by the
model's ``geometry.slice_context`` as channels, image-major: all stacked slices of
image channel 0 in order, then those of channel 1, …, which is how D-UNet and the
slice-stack 3D U-Net unfold their input into a volume ``(C, S, H, W)``. Slices
beyond the volume are ``pad_value`` (0, the paper's zeros). The target is slice
``i``'s label map. The two in-plane axes keep their order (axis 2 → ``(X, Y)``,
axis 0 → ``(Y, Z)``), the same convention as the slice-wise predictor.

Target slices are drawn from the slices that contain brain. With
``lesion_probability`` p, a slice containing lesion is drawn with probability p and
one without lesion otherwise, uniformly among the slices of all subjects of that
kind; with None every slice is equally likely, as in the D-UNet script (which
trains on all slices of every volume). When one kind is absent the other is drawn.
``lesion_draw: pixel`` draws a lesion slice in proportion to its lesion pixels instead,
so that every lesion pixel is equally likely to be the one the window is built around:
EDD Net's "for each of these pixels, we extract a patch around it", where a large
infarct gives many patches and a lacune few (the default, ``slice``, favours the slices
of small lesions, which are many). ``lesion_draw: lesion`` draws every 3D lesion equally
often (then one of its slices): small lesions, which the other two rarely show, count as
much as large ones.

In-plane, the example is ``size`` (default: the largest slice of the subjects,
rounded up to the model's ``size_multiple``). A slice smaller than ``size`` is
centred and padded; a larger one is cut by a window placed at random, centred on
a random lesion pixel when the slice was drawn for its lesion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionseg.models.geometry import ModelGeometry
from lesionseg.sampling.base import Example, Sampler, SubjectArrays
from lesionseg.sampling.crop import crop

#: How a lesion slice is drawn (see the module docstring).
LESION_DRAWS = ("slice", "pixel", "lesion")


def lesion_slice_weights(label: np.ndarray) -> np.ndarray:
    """Per slice (axis 0), the sum over the 3D lesions it cuts of 1 / that lesion's slices.

    Drawing slices in proportion to these weights draws every lesion (26-connected
    component) equally often, then one of its slices uniformly: a lacune of two slices
    is drawn as often as an infarct of thirty.
    """
    import cc3d

    components = cc3d.connected_components(np.asarray(label) > 0, connectivity=26)
    weights = np.zeros(label.shape[0], np.float64)
    for box in cc3d.statistics(components)["bounding_boxes"][1:]:
        if box is None:
            continue
        # a connected lesion holds a voxel in every slice its box spans
        first, last = box[0].start, box[0].stop
        weights[first:last] += 1.0 / (last - first)
    return weights


def in_plane_axes(axis: int) -> tuple[int, int]:
    """The two spatial axes of a slice taken along ``axis``, in array order."""
    return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]


def slice_stack(
    image: np.ndarray,
    index: int,
    axis: int,
    slice_context: Sequence[int],
    start: Sequence[int] = (0, 0),
    size: Sequence[int] | None = None,
    pad_value: float = 0.0,
) -> np.ndarray:
    """The stacked input of target slice ``index``: ``(C·S, H, W)``, image-major.

    Args:
        image: ``(C, X, Y, Z)`` volume (a memory map is fine: only the stack is read).
        index: Target slice along ``axis``.
        axis: Spatial axis the slices are taken along (0, 1 or 2).
        slice_context: (slices before, slices after) the target slice.
        start: First in-plane pixel of the window (may be negative: padding).
        size: In-plane window size (default: the whole slice).
        pad_value: Value outside the volume (beyond the first/last slice and in-plane).

    Returns:
        float32 array; channel ``c·S + j`` is slice ``index − before + j`` of channel ``c``.
    """
    before, after = int(slice_context[0]), int(slice_context[1])
    moved = np.moveaxis(image, 1 + axis, 1)  # (C, N, H, W), a view
    if size is None:
        size = moved.shape[2:]
    depth = before + 1 + after
    box_start = (index - before, int(start[0]), int(start[1]))
    stack = crop(moved, box_start, (depth, int(size[0]), int(size[1])), pad_value, np.float32)
    return stack.reshape(moved.shape[0] * depth, int(size[0]), int(size[1]))


def label_slice(
    label: np.ndarray,
    index: int,
    axis: int,
    start: Sequence[int] = (0, 0),
    size: Sequence[int] | None = None,
    pad_label: int = 0,
) -> np.ndarray:
    """Slice ``index`` of a label map along ``axis``: int64 ``(H, W)``, windowed like the input."""
    moved = np.moveaxis(label, axis, 0)
    if size is None:
        size = moved.shape[1:]
    box = (index, int(start[0]), int(start[1]))
    return crop(moved, box, (1, int(size[0]), int(size[1])), pad_label, np.int64)[0]


class SliceSampler(Sampler):
    """Slices (or slice stacks) along an axis, with oversampling of lesion slices.

    Args:
        subjects: Preprocessed training subjects (with labels).
        geometry: The model's geometry (``spatial_dims`` 2; ``slice_context`` sets the stack).
        axis: Spatial axis the slices are taken along (2 = axial in RAS arrays).
        size: In-plane example size (int or two ints); None: the largest slice of the
            subjects. Rounded up to the model's ``size_multiple``.
        lesion_probability: Probability that the target slice contains lesion (label > 0);
            None draws every slice with equal probability.
        brain_only: Draw only slices that contain brain (mask > 0).
        lesion_position: Where a lesion slice's window puts its drawn lesion pixel:
            ``"centre"`` (the window's middle, kept inside the slice) or ``"uniform"`` (a
            position drawn uniformly in the window, which may then reach past the slice and
            is padded: EDD Net's patches, "placed at a random position in the patch").
        lesion_draw: How a lesion slice is drawn: ``"slice"`` (each equally likely),
            ``"pixel"`` (in proportion to its lesion pixels: each lesion pixel equally
            likely, EDD Net's patches) or ``"lesion"`` (each 3D lesion equally likely,
            then one of its slices); with ``lesion_probability`` set.
        pad_value: Image value outside the volume.
        pad_label: Label value outside the volume.
        **kwargs: Passed to :class:`~lesionseg.sampling.base.Sampler` (augment, ...).

    Raises:
        ValueError: A 3D model, a bad option, a subject without labels, or no slice to draw.
    """

    def __init__(
        self,
        subjects: Sequence[SubjectArrays],
        geometry: ModelGeometry,
        *,
        axis: int = 2,
        size: int | Sequence[int] | None = None,
        lesion_probability: float | None = None,
        brain_only: bool = True,
        lesion_position: str = "centre",
        lesion_draw: str = "slice",
        pad_value: float = 0.0,
        pad_label: int = 0,
        **kwargs: Any,
    ):
        super().__init__(subjects, geometry, **kwargs)
        if lesion_position not in ("centre", "uniform"):
            raise ValueError(
                f"lesion_position must be 'centre' or 'uniform', got {lesion_position!r}"
            )
        self.lesion_position = lesion_position
        if lesion_draw not in LESION_DRAWS:
            raise ValueError(
                f"lesion_draw must be one of {', '.join(LESION_DRAWS)}, got {lesion_draw!r}"
            )
        self.lesion_draw = lesion_draw
        if geometry.spatial_dims != 2:
            raise ValueError(
                f"the slices sampler serves 2D models; this model is {geometry.spatial_dims}D "
                "(use the segments sampler)"
            )
        if isinstance(axis, bool) or axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        if lesion_probability is not None and not 0.0 <= lesion_probability <= 1.0:
            raise ValueError(
                f"lesion_probability must be in [0, 1] or null, got {lesion_probability}"
            )
        if not isinstance(pad_value, int | float) or isinstance(pad_value, bool):
            raise ValueError(f"pad_value must be a number, got {pad_value!r}")
        self.axis = int(axis)
        self.plane = in_plane_axes(self.axis)
        self.slice_context = tuple(int(s) for s in geometry.slice_context)
        self.lesion_probability = lesion_probability
        self.pad_value = float(pad_value)
        self.pad_label = int(pad_label)
        for s in self.subjects:
            if s.label is None:
                raise ValueError(f"subject {s.id!r} has no label map; training needs labels")
        self.size = self._example_size(size)

        lesion, other, pixels = [], [], []
        for k, subject in enumerate(self.subjects):
            label = np.moveaxis(np.asarray(subject.label), self.axis, 0)
            lesion_pixels = (label > 0).reshape(label.shape[0], -1).sum(axis=1)
            if self.lesion_draw == "lesion":
                lesion_pixels = lesion_slice_weights(label)
            has_lesion = lesion_pixels > 0
            if brain_only:
                mask = np.moveaxis(np.asarray(subject.mask), self.axis, 0)
                usable = (mask > 0).reshape(mask.shape[0], -1).any(axis=1)
            else:
                usable = np.ones(label.shape[0], bool)
            for i in np.flatnonzero(usable):
                (lesion if has_lesion[i] else other).append((k, int(i)))
                if has_lesion[i]:
                    pixels.append(float(lesion_pixels[i]))
        self._lesion = np.array(lesion, np.int64).reshape(-1, 2)
        # lesion_draw pixel / lesion: a lesion slice by its share of the pixels / lesions
        self._lesion_cumulative = np.cumsum(np.array(pixels, np.float64))
        self._other = np.array(other, np.int64).reshape(-1, 2)
        if len(self._lesion) + len(self._other) == 0:
            raise ValueError("no slice to draw: no subject has a slice with brain")
        self._lesion_pixels: dict[tuple[int, int], np.ndarray] = {}

    def _example_size(self, size: int | Sequence[int] | None) -> tuple[int, int]:
        multiple = self.geometry.size_multiple
        if size is None:
            shapes = [np.asarray(s.image.shape[1:])[list(self.plane)] for s in self.subjects]
            wanted = np.max(shapes, axis=0)
        else:
            wanted = np.broadcast_to(np.asarray(size, dtype=int), (2,))
            if (wanted < 1).any():
                raise ValueError(f"size must be positive, got {size!r}")
        return tuple(int(-(-int(w) // int(m)) * int(m)) for w, m in zip(wanted, multiple))

    @property
    def lesion_slices(self) -> int:
        """Number of drawable slices that contain lesion."""
        return len(self._lesion)

    @property
    def other_slices(self) -> int:
        """Number of drawable slices without lesion."""
        return len(self._other)

    def example_shapes(self) -> dict[str, tuple[int, ...]]:
        """``image``: (C·S, H, W); ``target``: (H, W)."""
        depth = 1 + sum(self.slice_context)
        channels = self.subjects[0].image.shape[0]
        return {"image": (channels * depth, *self.size), "target": self.size}

    def draw_slice(self, rng: np.random.Generator) -> tuple[int, int, bool]:
        """Draw (subject index, slice index, drawn as a lesion slice)."""
        p = self.lesion_probability
        if p is None:
            total = len(self._lesion) + len(self._other)
            j = int(rng.integers(total))
            from_lesion = j < len(self._lesion)
            s, i = self._lesion[j] if from_lesion else self._other[j - len(self._lesion)]
            return int(s), int(i), from_lesion
        from_lesion = bool(rng.random() < p)
        if not len(self._lesion):
            from_lesion = False
        elif not len(self._other):
            from_lesion = True
        pool = self._lesion if from_lesion else self._other
        if from_lesion and self.lesion_draw != "slice":
            total = self._lesion_cumulative[-1]
            j = int(np.searchsorted(self._lesion_cumulative, rng.random() * total, "right"))
        else:
            j = int(rng.integers(len(pool)))
        s, i = pool[min(j, len(pool) - 1)]
        return int(s), int(i), from_lesion

    def _window(self, s: int, i: int, lesion: bool, rng: np.random.Generator) -> tuple[int, int]:
        """Start of the in-plane window of slice ``i`` of subject ``s``."""
        shape = [self.subjects[s].image.shape[1 + a] for a in self.plane]
        if all(n <= z for n, z in zip(shape, self.size)):
            return tuple(-((z - n) // 2) for n, z in zip(shape, self.size))  # centred
        centre = None
        if lesion:
            key = (s, i)
            if key not in self._lesion_pixels:  # few slices contain lesion: cache them
                plane = label_slice(self.subjects[s].label, i, self.axis)
                self._lesion_pixels[key] = np.argwhere(plane > 0).astype(np.int32)
            pixels = self._lesion_pixels[key]
            centre = pixels[int(rng.integers(len(pixels)))]
        start = []
        for d, (n, z) in enumerate(zip(shape, self.size)):
            if n <= z:
                start.append(-((z - n) // 2))
            elif centre is not None and self.lesion_position == "uniform":
                start.append(int(centre[d]) - int(rng.integers(z)))
            elif centre is not None:
                start.append(int(np.clip(int(centre[d]) - (z - 1) // 2, 0, n - z)))
            else:
                start.append(int(rng.integers(n - z + 1)))
        return tuple(start)

    def cut(self, s: int, i: int, start: Sequence[int] = (0, 0)) -> Example:
        """The example of target slice ``i`` of subject ``s`` with its window at ``start``."""
        subject = self.subjects[s]
        image = slice_stack(
            subject.image, i, self.axis, self.slice_context, start, self.size, self.pad_value
        )
        target = label_slice(subject.label, i, self.axis, start, self.size, self.pad_label)
        return {"image": image, "target": target}

    def items(self) -> int:
        """Every drawable slice of every subject (lesion slices first)."""
        return len(self._lesion) + len(self._other)

    def example_at(self, index: int, rng: np.random.Generator) -> Example:
        """Slice ``index`` of the enumeration; its window (if cut) drawn with ``rng``."""
        lesion = index < len(self._lesion)
        s, i = self._lesion[index] if lesion else self._other[index - len(self._lesion)]
        return self.cut(int(s), int(i), self._window(int(s), int(i), lesion, rng))

    def draw(self, rng: np.random.Generator) -> Example:
        """One slice (stack) drawn as described in the module docstring."""
        s, i, lesion = self.draw_slice(rng)
        return self.cut(s, i, self._window(s, i, lesion, rng))
