"""Examples centred on voxels chosen by rules: positives and negatives (the MSSEG cascade).

Stage 1 of the cascade draws positives on lesion voxels and negatives among the
candidates (``FLAIR > 1.5 and brain and not lesion``); stage 2 draws its negatives where
the first network's stored probability is high (``first-maps > 0.5 and not lesion``).
Rules are read by :mod:`lesionseg.sampling.rules` (data, never code). Centres are drawn as
the class-balanced segments are: positive or negative with ``positive_fraction``, then a
subject holding such voxels, then a voxel uniformly; the example is cut around it by the
model's geometry (a 15³ patch and its centre label for a patch classifier, a segment and
its label box for a dense model).

The cascade's paper fixes its training set once: every lesion voxel, an equal number of
negatives drawn at random, 25 % of these patches held out for validation, and an epoch
is one pass over the rest. ``holdout`` sets voxels aside (each voxel of the chosen ones
with that probability, by the sampler's seed); :meth:`CandidateSampler.held_out` gives
them to the validation; with ``order: enumerate`` the epoch is every training positive
and a fixed, seeded draw of the negatives (``positive_fraction`` sets their ratio),
shuffled each epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionseg.models.geometry import ModelGeometry
from lesionseg.sampling.base import SubjectArrays
from lesionseg.sampling.rules import parse_rule, voxels
from lesionseg.sampling.segments import SegmentSampler, _ClassVoxels

POSITIVE, NEGATIVE = 1, 0


class CandidateSampler(SegmentSampler):
    """Patches (or segments) centred on rule-chosen positive and negative voxels.

    Args:
        subjects: Preprocessed training subjects (with labels; ``channel_names`` and the
            ``outputs`` of earlier predict stages when the rules name them).
        geometry: The model's geometry.
        positives: Rule of the positive centres (default: lesion voxels).
        negatives: Rule of the negative centres.
        positive_fraction: Probability that a centre is positive (0.5: equal numbers);
            with ``order: enumerate``, the share of positives in the fixed training set.
        holdout: Fraction of the chosen voxels held out for validation (0: none).
        output_size: Output size per axis (1 for a patch classifier).
        **kwargs: Passed to :class:`~lesionseg.sampling.segments.SegmentSampler`
            (pad_value, augment, ...).
    """

    def __init__(
        self,
        subjects: Sequence[SubjectArrays],
        geometry: ModelGeometry,
        *,
        positives: str = "lesion and brain",
        negatives: str = "brain and not lesion",
        positive_fraction: float = 0.5,
        holdout: float = 0.0,
        output_size: int | Sequence[int] = 1,
        **kwargs: Any,
    ):
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}")
        self.rules = {POSITIVE: parse_rule(positives), NEGATIVE: parse_rule(negatives)}
        self.holdout = float(holdout)
        self.positive_fraction = float(positive_fraction)
        self._held: list[dict[int, np.ndarray]] = []
        self._held_rows: dict[int | None, np.ndarray] = {}
        # Boolean maps of the chosen voxels (1 byte a voxel): membership tests for the
        # rejection sampling of large sets without re-evaluating the rule per voxel.
        self._chosen: list[dict[int, np.ndarray]] = []
        probabilities = {POSITIVE: positive_fraction, NEGATIVE: 1.0 - positive_fraction}
        super().__init__(
            subjects,
            geometry,
            output_size=output_size,
            class_probabilities=probabilities,
            **kwargs,
        )
        self._items = self._fixed_set() if self.order == "enumerate" else None

    def _index_subject(self, subject: SubjectArrays) -> dict[int, _ClassVoxels]:
        chosen = {k: voxels(rule, subject) for k, rule in self.rules.items()}
        held = {POSITIVE: None, NEGATIVE: None}
        if self.holdout > 0:
            index = len(self._chosen)
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, index, 17]))
            aside = rng.random(chosen[POSITIVE].shape, dtype=np.float32) < self.holdout
            held = {k: chosen[k] & aside for k in chosen}
            chosen = {k: chosen[k] & ~aside for k in chosen}
        self._chosen.append(chosen)
        self._held.append(held)
        return {k: _ClassVoxels(selector) for k, selector in chosen.items()}

    def _balanced(self, maps: list[dict[int, np.ndarray | None]], rng, limit=None):
        """Every positive and a random draw of the negatives (``positive_fraction``).

        Returns:
            ``(n, 2)`` int64 rows (subject, flat voxel index) and ``(n,)`` classes.
        """
        found = {
            k: [np.flatnonzero(m[k]) if m[k] is not None else np.zeros(0, np.int64) for m in maps]
            for k in (POSITIVE, NEGATIVE)
        }
        pools = {
            k: np.concatenate(
                [np.stack([np.full(len(v), s), v], 1) for s, v in enumerate(found[k])]
                or [np.zeros((0, 2), np.int64)]
            ).astype(np.int64)
            for k in found
        }
        positives = pools[POSITIVE]
        f = self.positive_fraction
        if f >= 1.0:
            wanted = 0
        elif f <= 0.0:
            wanted = len(pools[NEGATIVE])
        else:
            wanted = int(round(len(positives) * (1.0 - f) / f))
        negatives = pools[NEGATIVE]
        if wanted < len(negatives):
            negatives = negatives[np.sort(rng.choice(len(negatives), wanted, replace=False))]
        rows = np.concatenate([positives, negatives])
        classes = np.concatenate(
            [np.full(len(positives), POSITIVE), np.full(len(negatives), NEGATIVE)]
        )
        if limit is not None and len(rows) > limit:
            keep = np.sort(rng.choice(len(rows), int(limit), replace=False))
            rows, classes = rows[keep], classes[keep]
        return rows, classes

    def _fixed_set(self) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 23]))
        rows, _ = self._balanced(self._chosen, rng)
        if not len(rows):
            raise ValueError("the rules choose no voxel to train on")
        return rows

    def items(self) -> int | None:
        """Training examples of one enumerated epoch (None when drawing)."""
        return None if self._items is None else len(self._items)

    def example_at(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Example ``index`` of the fixed training set."""
        s, flat = (int(v) for v in self._items[index])
        return self.cut(s, np.unravel_index(flat, self.subjects[s].mask.shape))

    def held_out_batches(self, batch_size: int, limit: int | None = None):
        """Batches of the held-out examples: every held-out positive and as many negatives.

        The set is fixed by the sampler's seed; examples are cut as the batches are asked
        for, so a large held-out set costs one batch of memory.

        Args:
            batch_size: Examples per batch.
            limit: At most this many examples (a seeded subset), or None for all.

        Returns:
            An iterator of stacked examples, or None without ``holdout``.
        """
        if self.holdout <= 0:
            return None
        if limit not in self._held_rows:  # the same set at every validation: draw it once
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 29]))
            self._held_rows[limit] = self._balanced(self._held, rng, limit)[0]
        rows = self._held_rows[limit]

        def batches():
            for start in range(0, len(rows), batch_size):
                examples = [
                    self.cut(int(s), np.unravel_index(int(flat), self.subjects[s].mask.shape))
                    for s, flat in rows[start : start + batch_size]
                ]
                yield {key: np.stack([e[key] for e in examples]) for key in examples[0]}

        return batches()

    def _is_member(self, s: int, k: int, pos: tuple[int, ...]) -> bool:
        return bool(self._chosen[s][k][pos])

    def counts(self) -> dict[str, int]:
        """How many positive and negative voxels the rules chose for training (and held out)."""
        held = [h for h in self._held if h[POSITIVE] is not None]
        return {
            "positives": sum(int(c[POSITIVE].sum()) for c in self._chosen),
            "negatives": sum(int(c[NEGATIVE].sum()) for c in self._chosen),
            "held_out_positives": sum(int(h[POSITIVE].sum()) for h in held),
            "held_out_negatives": sum(int(h[NEGATIVE].sum()) for h in held),
        }
