"""What every sampler is: a source of (inputs, target) examples drawn with a given Generator.

A sampler is built from preprocessed subjects (anything with ``id``, ``image``
``(C, X, Y, Z)``, ``label`` ``(X, Y, Z)`` and ``mask`` ``(X, Y, Z)`` arrays, e.g. the
memory-mapped subjects of the preprocessing cache), the model's
:class:`~lesionseg.models.geometry.ModelGeometry` and its own options. It never
looks at the model's name: the geometry says how large an input must be for a
wanted output and where the output sits.

:meth:`Sampler.draw` is a pure function of the Generator it is handed, so the
loader can give each batch its own seed (run seed, stage, epoch, rank, batch):
examples are then the same whatever the number of loader processes, and a
resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lesionseg.augment import Compose, build_augmentations
from lesionseg.models.geometry import ModelGeometry

Example = dict[str, np.ndarray]


class SubjectArrays(Protocol):
    """The fields of a preprocessed subject that samplers read."""

    id: str
    image: np.ndarray
    label: np.ndarray | None
    mask: np.ndarray


@dataclass
class ArraySubject:
    """An in-memory preprocessed subject (tests, benchmarks, stage outputs).

    Attributes:
        id: Case identifier.
        image: ``(C, X, Y, Z)`` float32 image.
        label: ``(X, Y, Z)`` integer label map, or None.
        mask: ``(X, Y, Z)`` brain mask (non-zero inside).
        spacing: Voxel size in mm.
        channel_names: Names of the image channels (for sampler rules).
        outputs: Stored outputs of earlier stages: name → ``(K, X, Y, Z)`` probabilities.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None
    mask: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_names: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)


class Sampler(ABC):
    """Base class of training-example samplers.

    Subclasses implement :meth:`draw` (one example, before augmentation) and
    :meth:`example_shapes`. Augmentation, batching and the probability of
    augmenting an example are handled here so that every sampler treats them alike.

    Args:
        subjects: Preprocessed training subjects.
        geometry: The model's geometry.
        augment: Augmentations as recipe specs (``[{name: flip, ...}, ...]``).
        augment_probability: Probability that an example is augmented at all (Brain
            SegNet's curriculum raises it from 0 to 0.5 to 0.75 across stages).
        context: What earlier stages produced (e.g. ``{"networks": {...}}`` for samplers
            that mine hard negatives with a previous network); unused by simple samplers.
        order: ``"draw"`` (each example drawn at random, ``batches_per_epoch`` batches) or
            ``"enumerate"`` (every item once per epoch in an order shuffled by the seed:
            every slice of every subject for the slices sampler); only samplers that
            implement :meth:`items` enumerate.
        seed: Seed of the choices a sampler makes once, when it is built (the voxels it
            holds out for validation, the fixed negatives of an enumerated epoch); the
            trainer derives it from the run's seed and the stage.
    """

    def __init__(
        self,
        subjects: Sequence[SubjectArrays],
        geometry: ModelGeometry,
        *,
        augment: Sequence[dict[str, Any]] | None = None,
        augment_probability: float = 1.0,
        context: dict[str, Any] | None = None,
        order: str = "draw",
        seed: int = 0,
    ):
        if not subjects:
            raise ValueError("a sampler needs at least one subject")
        if not 0.0 <= augment_probability <= 1.0:
            raise ValueError(f"augment_probability must be in [0, 1], got {augment_probability}")
        self.subjects = list(subjects)
        self.geometry = geometry
        self.augmentation: Compose = build_augmentations(augment, geometry.spatial_dims)
        self.augment_probability = float(augment_probability)
        self.context = context or {}
        if order not in ("draw", "enumerate"):
            raise ValueError(f"order must be 'draw' or 'enumerate', got {order!r}")
        if order == "enumerate" and type(self).items is Sampler.items:
            raise ValueError(f"{type(self).__name__} cannot enumerate its examples")
        self.order = order
        self.seed = int(seed)

    @abstractmethod
    def draw(self, rng: np.random.Generator) -> Example:
        """One example ``{"image": (C, *input), "target": (*output), ...}`` before augmentation."""

    @abstractmethod
    def example_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of one example's arrays (``image``, ``target``)."""

    def items(self) -> int | None:
        """How many items one enumerated epoch holds (None: this sampler only draws)."""
        return None

    def counts(self) -> dict[str, int]:
        """What the sampler chose to train on, by kind (logged when a stage starts)."""
        return {}

    def example_at(self, index: int, rng: np.random.Generator) -> Example:
        """Item ``index`` of the enumeration, before augmentation (``rng`` for its window)."""
        raise NotImplementedError(f"{type(self).__name__} does not enumerate")

    def held_out_batches(self, batch_size: int, limit: int | None = None):
        """Batches of examples set aside for validation (never trained on).

        Args:
            batch_size: Examples per batch.
            limit: At most this many examples (a fixed subset), or None for all.

        Returns:
            An iterator of stacked examples, or None for a sampler that holds none out.
        """
        return None

    def _augmented(self, example: Example, rng: np.random.Generator) -> Example:
        if len(self.augmentation) and rng.random() < self.augment_probability:
            example = self.augmentation(example, rng)
        return example

    def example(self, rng: np.random.Generator) -> Example:
        """One augmented example."""
        return self._augmented(self.draw(rng), rng)

    def batch(
        self, size: int, rng: np.random.Generator, indices: Sequence[int] | None = None
    ) -> Example:
        """``size`` examples (or the enumerated items ``indices``) stacked on a first axis."""
        if indices is None:
            examples = [self.example(rng) for _ in range(size)]
        else:
            examples = [self._augmented(self.example_at(int(i), rng), rng) for i in indices]
        return {key: np.stack([e[key] for e in examples]) for key in examples[0]}
