"""Examples centred on voxels chosen by rules: positives and negatives (the MSSEG cascade).

Stage 1 of the cascade draws positives on lesion voxels and negatives among the
candidates (``FLAIR > 1.5 and brain and not lesion``); stage 2 draws its negatives where
the first network's stored probability is high (``first-maps > 0.5 and not lesion``).
Rules are read by :mod:`lesionseg.sampling.rules` (data, never code). Centres are drawn as
the class-balanced segments are: positive or negative with ``positive_fraction``, then a
subject holding such voxels, then a voxel uniformly; the example is cut around it by the
model's geometry (a 15³ patch and its centre label for a patch classifier, a segment and
its label box for a dense model).
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
        positive_fraction: Probability that a centre is positive (0.5: equal numbers).
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
        output_size: int | Sequence[int] = 1,
        **kwargs: Any,
    ):
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.rules = {POSITIVE: parse_rule(positives), NEGATIVE: parse_rule(negatives)}
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

    def _index_subject(self, subject: SubjectArrays) -> dict[int, _ClassVoxels]:
        chosen = {k: voxels(rule, subject) for k, rule in self.rules.items()}
        self._chosen.append(chosen)
        return {k: _ClassVoxels(selector) for k, selector in chosen.items()}

    def _is_member(self, s: int, k: int, pos: tuple[int, ...]) -> bool:
        return bool(self._chosen[s][k][pos])

    def counts(self) -> dict[str, int]:
        """How many positive and negative voxels the rules chose, over all subjects."""
        return {
            "positives": sum(int(c[POSITIVE].sum()) for c in self._chosen),
            "negatives": sum(int(c[NEGATIVE].sum()) for c in self._chosen),
        }
