"""Combiners: how a method's prediction graph joins the outputs of its networks.

A combiner is registered in :data:`COMBINERS` with a decorator and named in a recipe's
``predict.graph``. It is called as ``combine(inputs, **options)``, where each input is a
:class:`GraphInput` (a network, or a smaller graph) that predicts lazily, so that a
combiner asks only for what it needs (the gate predicts its second input only where the
first is confident; component re-scoring classifies one patch per small component).
Every combiner returns ``(K, *spatial)`` float32 probabilities. A combiner that takes a
fixed number of inputs says so in an ``arity`` attribute (checked when a graph is read),
and one with options to check early in a ``check_options`` function.

* ``mean``: the mean of the inputs (an ensemble).
* ``product``: the MSSEG cascade's p₁·p₂ for every foreground class, background 1 − Σ.
* ``gate``: the second input only where the first's foreground probability exceeds
  ``threshold`` (the cascade's later rule: network 2 only where p₁ > 0.8), zero elsewhere.
* ``within``: the input only on the voxels of a rule on the image
  (:mod:`lesionseg.sampling.rules`), background elsewhere; the input is asked only about
  those voxels (the MSSEG cascade classifies its FLAIR candidates, not every brain voxel).
* ``rescore-components``: EDD + MUSCLE's false-positive removal: connected components of
  the first input's mask (p > ``threshold``) smaller than ``max_size`` voxels are classified
  by the second input (a patch classifier, at the component's centroid), and each of their
  voxels gets Bayes' fusion p·q / (p·q + (1 − p)(1 − q)) of its probability p and the
  component's q (../shared/SPECS.md §4); larger components keep p.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from lesionseg.errors import LesionsegError
from lesionseg.postprocess.components import small_components
from lesionseg.registry import Registry

COMBINERS: Registry = Registry("combiner")


class GraphInput(Protocol):
    """One input of a combiner: predicts on demand."""

    def dense(self, where: np.ndarray | None = None) -> np.ndarray:
        """``(K, *spatial)`` probabilities; ``where`` (bool) limits the voxels that matter."""

    def at(self, points: np.ndarray, probability: np.ndarray | None = None) -> np.ndarray:
        """``(N, K)`` probabilities of a patch classifier at ``(N, 3)`` voxel centres.

        ``probability`` is a segmenter's foreground map, for classifiers that read it.
        """

    @property
    def subject(self):
        """The image as a label-free subject (channels by name), for voxel rules."""


def _with_background(foreground: np.ndarray) -> np.ndarray:
    """``(K-1, ...)`` foreground maps → ``(K, ...)`` with background = 1 − Σ foreground."""
    background = np.clip(1.0 - foreground.sum(0, keepdims=True), 0.0, 1.0)
    return np.concatenate([background, foreground]).astype(np.float32, copy=False)


def _check_count(inputs: Sequence, count: int | None, name: str) -> None:
    if (count is None and not inputs) or (count is not None and len(inputs) != count):
        wanted = "at least one" if count is None else str(count)
        raise LesionsegError(f"combiner {name!r} takes {wanted} input(s), got {len(inputs)}")


@COMBINERS.register("mean")
def mean(inputs: Sequence[GraphInput]) -> np.ndarray:
    """The mean of the inputs' probabilities."""
    _check_count(inputs, None, "mean")
    total = None
    for item in inputs:
        probs = item.dense()
        total = probs.astype(np.float32) if total is None else total + probs
    return (total / len(inputs)).astype(np.float32, copy=False)


@COMBINERS.register("product")
def product(inputs: Sequence[GraphInput]) -> np.ndarray:
    """p₁·p₂·… per foreground class; background takes the rest."""
    _check_count(inputs, None, "product")
    foreground = None
    for item in inputs:
        probs = item.dense()[1:]
        foreground = probs.astype(np.float32) if foreground is None else foreground * probs
    return _with_background(foreground)


@COMBINERS.register("gate")
def gate(inputs: Sequence[GraphInput], threshold: float = 0.8) -> np.ndarray:
    """The second input where the first's foreground exceeds ``threshold``; 0 elsewhere."""
    _check_count(inputs, 2, "gate")
    first = inputs[0].dense()
    where = first[1:].sum(0) > threshold
    if not where.any():
        return _with_background(np.zeros_like(first[1:]))
    second = inputs[1].dense(where)
    return _with_background(np.where(where[None], second[1:], 0.0).astype(np.float32))


def _check_within(rule: str = "brain") -> None:
    from lesionseg.sampling.rules import parse_rule

    if "lesion" in {t.flag for t in parse_rule(rule)}:
        raise ValueError(f"rule {rule!r}: 'lesion' is unknown at prediction (no labels)")


@COMBINERS.register("within")
def within(inputs: Sequence[GraphInput], rule: str = "brain") -> np.ndarray:
    """The input on the voxels of ``rule`` (e.g. ``FLAIR > 1.5 and brain``), 0 elsewhere.

    Args:
        inputs: One input, asked only about the chosen voxels.
        rule: A voxel rule on the image channels (z-scored, by name) and the brain mask.
    """
    from lesionseg.sampling.rules import parse_rule, voxels

    _check_count(inputs, 1, "within")
    try:
        where = voxels(parse_rule(rule), inputs[0].subject)
    except ValueError as err:
        raise LesionsegError(f"combiner 'within': {err}") from None
    probs = inputs[0].dense(where)
    return _with_background(np.where(where[None], probs[1:], 0.0).astype(np.float32))


within.arity = 1
within.check_options = _check_within


gate.arity = 2


def bayes_fusion(pixel: np.ndarray, instance: np.ndarray | float) -> np.ndarray:
    """p·q / (p·q + (1 − p)(1 − q)): two independent lesion probabilities fused."""
    agree = pixel * instance
    denominator = agree + (1.0 - pixel) * (1.0 - instance)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, agree / safe, 0.5).astype(np.float32)


@COMBINERS.register("rescore-components")
def rescore_components(
    inputs: Sequence[GraphInput],
    max_size: int = 60,
    threshold: float = 0.5,
    slice_axis: int | None = None,
    connectivity: int = 26,
) -> np.ndarray:
    """Re-score the small components of the first input with the second (Bayes' fusion).

    Args:
        inputs: The dense segmenter, then the component classifier (a patch model).
        max_size: Components with fewer voxels are re-scored (EDD + MUSCLE: 60 pixels).
        threshold: The first input's mask is p > threshold.
        slice_axis: Components per slice along this axis (2D methods), or None (3D).
        connectivity: 6/18/26 in 3D (4/8 in a slice: 26 and 18 mean 8).
    """
    _check_count(inputs, 2, "rescore-components")
    probs = inputs[0].dense().astype(np.float32, copy=True)
    if probs.shape[0] != 2:
        raise LesionsegError("rescore-components needs a binary (2-class) segmenter")
    mask = probs[1] > threshold
    labels, small, centres = small_components(mask, max_size, slice_axis, connectivity)
    if not len(small):
        return probs
    # each component's instance probability q, looked up per voxel (0.5: no change)
    q = np.full(int(labels.max()) + 1, 0.5, np.float32)
    q[small] = inputs[1].at(centres, probability=probs[1])[:, 1]
    voxels = np.isin(labels, small)
    probs[1][voxels] = bayes_fusion(probs[1][voxels], q[labels[voxels]])
    probs[0] = 1.0 - probs[1]
    return probs


rescore_components.arity = 2
