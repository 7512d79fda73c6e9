"""Small candidate lesions of an earlier network, labelled by the reference (MUSCLE Net).

EDD + MUSCLE trains its false-positive classifier on EDD Net's own output on the training
scans (a predict stage's stored maps, read by name): every connected component, per slice,
of ``map > threshold`` with fewer than ``max_size`` pixels is a candidate; it is a lesion
(label 1) if it overlaps the reference, else a false positive (label 0). The example is
the classifier's input at the component's centroid: for a multi-scale classifier
(``geometry.patch_scales``) the image patches at those scales resized to its patch plus
the patch of the stored map (:func:`~lesionseg.inference.multiscale.multiscale_patches_3d`),
the same input ``rescore-components`` builds at prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionseg.models.geometry import ModelGeometry
from lesionseg.postprocess.components import small_components
from lesionseg.sampling.base import Example, Sampler, SubjectArrays
from lesionseg.sampling.rules import value_map


class ComponentSampler(Sampler):
    """One example per small component of a stored probability map, label by overlap.

    Args:
        subjects: Preprocessed training subjects with labels and the stored output.
        geometry: The classifier's geometry (a multi-scale 2D patch classifier).
        source: Name of the predict stage whose maps are read (its foreground probability;
            an image channel's name works too).
        threshold: A pixel is part of a candidate where the map exceeds it (0.5).
        max_size: Candidates have fewer pixels than this (60, the paper).
        axis: The slice axis the components are found in (2: axial).
        connectivity: 4 or 8 (in-plane).
        **kwargs: Passed to :class:`~lesionseg.sampling.base.Sampler` (order, augment, ...).

    Raises:
        ValueError: A model that is not a multi-scale patch classifier, a missing stored
            output, no candidate at all, or a bad option.
    """

    def __init__(
        self,
        subjects: Sequence[SubjectArrays],
        geometry: ModelGeometry,
        *,
        source: str,
        threshold: float = 0.5,
        max_size: int = 60,
        axis: int = 2,
        connectivity: int = 8,
        **kwargs: Any,
    ):
        super().__init__(subjects, geometry, **kwargs)
        if not getattr(geometry, "patch_scales", None) or geometry.spatial_dims != 2:
            raise ValueError("the components sampler feeds a multi-scale 2D patch classifier")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        self.source, self.axis = source, int(axis)
        rows = []  # (subject, x, y, z, label)
        for index, subject in enumerate(self.subjects):
            if subject.label is None:
                raise ValueError(f"subject {subject.id!r} has no label map; training needs labels")
            mask = value_map(subject, source) > threshold
            # the candidates rescore-components will classify at prediction, found alike
            ids, small, centres = small_components(mask, max_size, self.axis, connectivity)
            lesion = np.bincount(ids[np.asarray(subject.label) > 0], minlength=ids.max() + 1)
            for number, centre in zip(small, centres):
                rows.append((index, *centre, int(lesion[number] > 0)))
        if not rows:
            raise ValueError(f"no component of {source!r} under {max_size} pixels to train on")
        self._rows = np.array(rows, np.int64)
        self._maps: dict[int, np.ndarray] = {}  # foreground maps, read once per subject

    def counts(self) -> dict[str, int]:
        """Candidates that are lesions and that are false positives."""
        return {
            "lesions": int(self._rows[:, 4].sum()),
            "false_positives": int((self._rows[:, 4] == 0).sum()),
        }

    def items(self) -> int:
        """Candidates of every subject."""
        return len(self._rows)

    def example_shapes(self) -> dict[str, tuple[int, ...]]:
        """``image``: the classifier's input maps; ``target``: one label."""
        return {
            "image": (self.geometry.input_channels_total, *self.geometry.patch_size),
            "target": (),
        }

    def draw(self, rng: np.random.Generator) -> Example:
        """A candidate drawn uniformly."""
        return self.example_at(int(rng.integers(len(self._rows))), rng)

    def example_at(self, index: int, rng: np.random.Generator) -> Example:
        """Candidate ``index``: the classifier's input at its centroid and its label."""
        from lesionseg.inference.multiscale import multiscale_patches_3d

        s, x, y, z, label = (int(v) for v in self._rows[index])
        subject = self.subjects[s]
        if s not in self._maps:
            self._maps[s] = np.asarray(value_map(subject, self.source), np.float32)
        inputs = multiscale_patches_3d(
            np.asarray(subject.image),
            self._maps[s],
            np.array([[x, y, z]]),
            slice_axis=self.axis,
            sizes=self.geometry.patch_scales,
            out_size=self.geometry.patch_size[0],
        )[0]
        return {"image": inputs, "target": np.array(label, np.int64)}
