"""How post-processing steps chain: the ``(probabilities, labels)`` pair passed from step to step.

Contract:

* **State.** Between steps the prediction is a pair ``(probabilities, labels)``:
  ``probabilities`` is ``(K, X, Y, Z)`` float32 (always present; class 0 is background;
  a one-map sigmoid model's map ``p`` arrives as ``(1 − p, p)``), ``labels`` is an
  ``(X, Y, Z)`` uint8 map with values in ``0..K-1``, or None while no step has made one
  (its label map is then the argmax of the probabilities, :func:`current_labels`).
  The pipeline starts from ``(model probabilities, None)``.
* **Call.** A step is called as ``step(probabilities, **context, **options)``: the
  ``options`` are the recipe's, and the ``context`` holds those of ``image`` (the
  ``(C, X, Y, Z)`` model input), ``mask`` (the brain mask or None), ``spacing`` (the
  voxel size in mm of the grid the step runs on) and ``labels`` (the current label map
  or None) that the step's signature names.
* **Return.** New probabilities ``(K, X, Y, Z)``, which drop the label map (it
  described the old probabilities, so label steps belong after probability steps); a
  label map ``(X, Y, Z)``, which replaces the label map and leaves the probabilities;
  or both as a ``(probabilities, labels)`` tuple, ``labels`` possibly None.

The segmentation written is the last label map (or the argmax of the last
probabilities); ``--save-probabilities`` writes the last probabilities, so steps that
only change labels (``threshold``, ``min-lesion-size``, ``keep-largest``) do not show
in it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lesionseg.errors import LesionsegError

#: Keywords the pipeline passes to a step that names them; a recipe may not set them.
CONTEXT = ("image", "mask", "spacing", "labels")

Step = tuple[str, dict[str, Any]]


def current_labels(probabilities: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The label map of a prediction: ``labels``, or the argmax of the probabilities.

    Args:
        probabilities: ``(K, X, Y, Z)`` class probabilities.
        labels: The label map a previous step made, or None.

    Returns:
        ``(X, Y, Z)`` uint8 labels.
    """
    if labels is not None:
        return labels
    return np.argmax(probabilities, axis=0).astype(np.uint8)


def parse_steps(raw: Any, where: str = "predict.postprocess") -> list[Step]:
    """Read a ``predict.postprocess`` list as ``(name, options)`` pairs.

    Each entry is a name (``crf``), ``{name: ..., <options>}``
    (``{name: threshold, threshold: 0.6}``) or ``{<name>: {<options>}}``
    (``{crf: {params: crf.json}}``). A single entry may stand for a list of one.

    Args:
        raw: The list (or a single entry, or None for no steps).
        where: Where the list comes from, for errors.

    Raises:
        LesionsegError: An entry of another shape, naming it (``predict.postprocess[1]``).
    """
    if raw is None:
        return []
    items = [raw] if isinstance(raw, str | Mapping) else raw
    if not isinstance(items, Sequence):
        raise LesionsegError(f"{where}: must be a list of steps, got {raw!r}")
    steps = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            steps.append((item, {}))
        elif isinstance(item, Mapping) and "name" in item:
            steps.append((str(item["name"]), {k: v for k, v in item.items() if k != "name"}))
        elif isinstance(item, Mapping) and len(item) == 1:
            name, options = next(iter(item.items()))
            if not isinstance(options, Mapping | None):
                raise LesionsegError(
                    f"{where}[{i}].{name}: the options must be a mapping, got {options!r} "
                    f"(e.g. {{name: {name}, <option>: {options!r}}})"
                )
            steps.append((str(name), dict(options or {})))
        else:
            raise LesionsegError(
                f"{where}[{i}]: cannot read step {item!r} "
                "(expected a name, {name: ..., <options>} or {<name>: {<options>}})"
            )
    return steps


def apply_step(
    name: str,
    step: Callable[..., Any],
    probabilities: np.ndarray,
    labels: np.ndarray | None,
    *,
    options: Mapping[str, Any],
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run one step on ``(probabilities, labels)`` and return the pair it leaves.

    Args:
        name: The step's name, for errors.
        step: The registered step.
        probabilities: ``(K, X, Y, Z)`` float32 probabilities.
        labels: ``(X, Y, Z)`` uint8 label map, or None.
        options: The step's options.
        image: ``(C, X, Y, Z)`` model input on the same grid.
        mask: Brain mask, or None.
        spacing: Voxel size in mm of the grid.

    Returns:
        The new ``(probabilities, labels)`` (see the module docstring).

    Raises:
        LesionsegError: A bad option, or a result of the wrong shape or labels.
    """
    context = {"image": image, "mask": mask, "spacing": spacing, "labels": labels}
    named = inspect.signature(step).parameters
    kwargs = {key: value for key, value in context.items() if key in named}
    try:
        result = step(probabilities, **kwargs, **options)
    except TypeError as err:
        if "argument" in str(err):  # an option the step does not take, or a missing one
            raise LesionsegError(f"post-processing step {name!r}: {err}") from None
        raise
    return _split_result(name, result, probabilities)


def _split_result(
    name: str, result: Any, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(probabilities, labels)`` from a step's return value, checked."""
    if isinstance(result, tuple):
        if len(result) != 2:
            raise LesionsegError(
                f"post-processing step {name!r} returned {len(result)} values, "
                "expected (probabilities, labels)"
            )
        new_probs, new_labels = result
    elif np.ndim(result) == probabilities.ndim:
        new_probs, new_labels = result, None
    else:
        new_probs, new_labels = probabilities, result
    new_probs = np.asarray(new_probs)
    if new_probs.shape != probabilities.shape:
        raise LesionsegError(
            f"post-processing step {name!r} returned probabilities of shape {new_probs.shape}, "
            f"expected {probabilities.shape}"
        )
    if new_labels is not None:
        new_labels = np.asarray(new_labels)
        if new_labels.shape != probabilities.shape[1:]:
            raise LesionsegError(
                f"post-processing step {name!r} returned labels of shape {new_labels.shape}, "
                f"expected {probabilities.shape[1:]}"
            )
        if new_labels.size and (new_labels.min() < 0 or new_labels.max() >= len(probabilities)):
            raise LesionsegError(
                f"post-processing step {name!r} returned labels outside 0..{len(probabilities) - 1}"
            )
        new_labels = new_labels.astype(np.uint8, copy=False)
    return new_probs.astype(np.float32, copy=False), new_labels
