"""Class-balanced segments for dense training (DeepMedic; any valid- or same-padded 3D model).

A segment is the input box around a centre voxel; its target is the label box
of the model's output around the same centre. Centres are drawn in two steps:
a class with the configured probability (50 % foreground / 50 % background as in
the paper, or one probability per class as the later official code does), then
a subject among those that contain that class inside the brain mask, then a
voxel of that class inside the mask, uniformly. Drawing the class first keeps
the class frequencies exactly as configured even when some subjects have no
lesion. The input is cut around the centre with
``geometry.input_size(output_size)``; where it leaves the volume it is padded
with ``pad_value`` (labels with ``pad_label``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionseg.models.geometry import ModelGeometry
from lesionseg.sampling.base import Example, Sampler, SubjectArrays
from lesionseg.sampling.crop import box_around, crop

FOREGROUND = -1  # pseudo-class "any label > 0" of the foreground/background mode

# A class covering more than this fraction of the volume is drawn by rejection
# (uniform voxel, keep it if it belongs to the class) instead of from a stored
# index list: background would otherwise cost 4-8 bytes per brain voxel per subject
# (≈ 0.5 GB for 50 subjects at 1 mm) in every loader process.
_REJECTION_FRACTION = 0.2
_REJECTION_TRIES = 200


class _ClassVoxels:
    """Where the voxels of one class lie in one subject (indices or rejection sampling)."""

    def __init__(self, selector: np.ndarray):
        self.count = int(np.count_nonzero(selector))
        self.size = selector.size
        self.shape = selector.shape
        self.indices: np.ndarray | None = None
        if self.count and self.count / self.size <= _REJECTION_FRACTION:
            dtype = np.int32 if self.size < 2**31 else np.int64
            self.indices = np.flatnonzero(selector).astype(dtype)

    def draw(self, rng: np.random.Generator, member) -> tuple[int, ...]:
        """A uniformly drawn voxel of the class; ``member(flat)`` tests membership."""
        if self.indices is not None:
            flat = int(self.indices[rng.integers(len(self.indices))])
            return np.unravel_index(flat, self.shape)
        for _ in range(_REJECTION_TRIES):
            flat = int(rng.integers(self.size))
            if member(flat):
                return np.unravel_index(flat, self.shape)
        raise RuntimeError("rejection sampling failed; class fraction estimate is wrong")


class SegmentSampler(Sampler):
    """Segments centred on voxels drawn by class inside the brain mask.

    Args:
        subjects: Preprocessed training subjects (with labels).
        geometry: The model's geometry (3D).
        output_size: Output (target) size per axis; the input size follows from the
            geometry (DeepMedic paper: 9³ output ⇔ 25³ normal-pathway segment).
        foreground_fraction: Probability that a centre is a foreground voxel (any label
            > 0); the rest are background. Ignored when ``class_probabilities`` is given.
        class_probabilities: One probability per class (list indexed by label, or mapping
            label → probability), or ``"uniform"`` for equal probabilities over the
            classes present. Classes absent from every subject are dropped and the rest
            renormalised.
        pad_value: Image value outside the volume (0 = brain mean after z-scoring), or
            ``"min"`` for each channel's minimum in the subject.
        pad_label: Label value outside the volume.
        **kwargs: Passed to :class:`~lesionseg.sampling.base.Sampler` (augment, ...).
    """

    def __init__(
        self,
        subjects: Sequence[SubjectArrays],
        geometry: ModelGeometry,
        *,
        output_size: int | Sequence[int],
        foreground_fraction: float = 0.5,
        class_probabilities: str | Sequence[float] | dict[int, float] | None = None,
        pad_value: float | str = 0.0,
        pad_label: int = 0,
        **kwargs: Any,
    ):
        super().__init__(subjects, geometry, **kwargs)
        dims = geometry.spatial_dims
        if isinstance(output_size, int):
            output_size = (output_size,) * dims
        if len(output_size) != dims or any(int(s) < 1 for s in output_size):
            raise ValueError(f"output_size must be {dims} positive sizes, got {list(output_size)}")
        self.input_size = tuple(geometry.input_size(tuple(int(s) for s in output_size)))
        self.output_size = tuple(geometry.output_size(self.input_size))
        self.before = geometry.margin_before
        if not isinstance(pad_value, int | float) and pad_value != "min":
            raise ValueError(f"pad_value must be a number or 'min', got {pad_value!r}")
        self.pad_value = pad_value
        self.pad_label = int(pad_label)
        for transform in self.augmentation.transforms:
            axes = getattr(transform, "axes", ())
            bad = [a for a in axes if geometry.margin_before[a] != geometry.margin_after[a]]
            if bad:  # a flip would shift the output by a voxel relative to the target
                raise ValueError(
                    f"cannot flip axis {bad[0]}: the model's margins on it are asymmetric "
                    f"({geometry.margin_before[bad[0]]} before, "
                    f"{geometry.margin_after[bad[0]]} after)"
                )
        for s in self.subjects:
            if s.label is None:
                raise ValueError(f"subject {s.id!r} has no label map; training needs labels")
        self._index = [self._index_subject(s) for s in self.subjects]
        self.classes, self.probabilities = self._class_probabilities(
            foreground_fraction, class_probabilities
        )
        # Subjects that contain each class (drawn from on every draw: computed once).
        self._holders = {
            k: [i for i, idx in enumerate(self._index) if k in idx and idx[k].count]
            for k in self.classes
        }
        self._minimum = [None] * len(self.subjects)

    def _index_subject(self, subject: SubjectArrays) -> dict[int, _ClassVoxels]:
        label = np.asarray(subject.label)
        inside = np.asarray(subject.mask) > 0
        index = {
            FOREGROUND: _ClassVoxels(inside & (label > 0)),
        }
        for value in np.unique(label[inside]):
            index[int(value)] = _ClassVoxels(inside & (label == value))
        return index

    def _class_probabilities(self, foreground_fraction, class_probabilities):
        present = sorted({k for idx in self._index for k, v in idx.items() if v.count and k >= 0})
        if class_probabilities is None:
            if not 0.0 <= foreground_fraction <= 1.0:
                raise ValueError(
                    f"foreground_fraction must be in [0, 1], got {foreground_fraction}"
                )
            wanted = {FOREGROUND: float(foreground_fraction), 0: 1.0 - foreground_fraction}
        elif class_probabilities == "uniform":
            wanted = {k: 1.0 for k in present}
        elif isinstance(class_probabilities, dict):
            wanted = {int(k): float(v) for k, v in class_probabilities.items()}
        elif isinstance(class_probabilities, str):
            raise ValueError(
                f"class_probabilities must be 'uniform', a list or a mapping, "
                f"got {class_probabilities!r}"
            )
        else:
            wanted = {k: float(v) for k, v in enumerate(class_probabilities)}
        if any(v < 0 for v in wanted.values()):
            raise ValueError("class probabilities must be ≥ 0")
        available = {
            k: v
            for k, v in wanted.items()
            if v > 0 and any(idx[k].count for idx in self._index if k in idx)
        }
        if not available:
            raise ValueError("no subject has a voxel of any class with a non-zero probability")
        total = sum(available.values())
        classes = sorted(available)
        return classes, np.array([available[k] / total for k in classes])

    def example_shapes(self) -> dict[str, tuple[int, ...]]:
        """``image``: (C, *input_size); ``target``: output_size (``()`` for patch classifiers)."""
        channels = self.subjects[0].image.shape[0]
        target = () if self.geometry.patch_size is not None else self.output_size
        return {"image": (channels, *self.input_size), "target": target}

    def draw_centre(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...], int]:
        """Draw (subject index, centre voxel, class) as described in the module docstring."""
        k = self.classes[int(rng.choice(len(self.classes), p=self.probabilities))]
        holders = self._holders[k]
        s = holders[int(rng.integers(len(holders)))]
        subject = self.subjects[s]

        def member(flat: int) -> bool:
            return self._is_member(s, k, np.unravel_index(flat, subject.mask.shape))

        centre = tuple(int(c) for c in self._index[s][k].draw(rng, member))
        return s, centre, k

    def _is_member(self, s: int, k: int, pos: tuple[int, ...]) -> bool:
        """Whether voxel ``pos`` of subject ``s`` belongs to class ``k`` (inside the brain)."""
        subject = self.subjects[s]
        if not subject.mask[pos]:
            return False
        value = int(subject.label[pos])
        return value > 0 if k == FOREGROUND else value == k

    def cut(self, s: int, centre: Sequence[int]) -> Example:
        """The example of subject ``s`` centred on ``centre`` (no augmentation)."""
        subject = self.subjects[s]
        out_start = box_around(centre, self.output_size)
        in_start = tuple(o - b for o, b in zip(out_start, self.before))
        pad = self.pad_value
        if pad == "min":
            if self._minimum[s] is None:
                self._minimum[s] = np.asarray(subject.image).min(axis=(1, 2, 3))
            image = crop(subject.image, in_start, self.input_size, 0.0, np.float32)
            inside = crop(subject.mask, in_start, self.input_size, 2, np.uint8) != 2
            image = np.where(inside[None], image, self._minimum[s][:, None, None, None])
            image = image.astype(np.float32)
        else:
            image = crop(subject.image, in_start, self.input_size, float(pad), np.float32)
        target = crop(subject.label, out_start, self.output_size, self.pad_label, np.int64)
        if self.geometry.patch_size is not None:  # a patch classifier: one label per example
            target = target.reshape(())
        return {"image": image, "target": target}

    def draw(self, rng: np.random.Generator) -> Example:
        """One segment centred on a class-balanced voxel."""
        s, centre, _ = self.draw_centre(rng)
        return self.cut(s, centre)
