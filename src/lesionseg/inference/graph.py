"""A method's prediction graph: which networks run, and how their outputs combine.

The graph is saved in the model folder (``method.json``) and used both by
``lesionseg predict`` and by validation during training, so a later network is chosen on
what the method outputs, not on the network alone. A node is either a network's name, or
``{combine: NAME, inputs: [node, ...], <options>}`` with a combiner of
:data:`~lesionseg.inference.combine.COMBINERS`::

    predict:
      graph: {combine: product, inputs: [first, second]}      # the MSSEG cascade

The default graph is the last stage's network.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.inference.combine import COMBINERS

GraphNode = str | dict


def graph_networks(node: GraphNode) -> list[str]:
    """The networks a graph uses, in order of first use."""
    if isinstance(node, str):
        return [node]
    names: list[str] = []
    for child in node["inputs"]:
        names += [n for n in graph_networks(child) if n not in names]
    return names


def check_graph(node: Any, networks: Collection[str], where: str = "predict.graph") -> GraphNode:
    """Validate a graph read from a recipe or ``method.json``.

    Raises:
        LesionsegError: An unknown network or combiner, a bad option, a malformed node.
    """
    if isinstance(node, str):
        if node not in networks:
            known = ", ".join(sorted(networks))
            raise LesionsegError(f"recipe {where}: no network {node!r} (networks: {known})")
        return node
    if not isinstance(node, dict) or "combine" not in node or "inputs" not in node:
        raise LesionsegError(
            f"recipe {where}: a node is a network name or {{combine: NAME, inputs: [...]}}"
        )
    combiner = COMBINERS.get(str(node["combine"]))
    if not isinstance(node["inputs"], list) or not node["inputs"]:
        raise LesionsegError(f"recipe {where}.inputs: must be a non-empty list")
    options = {k: v for k, v in node.items() if k not in ("combine", "inputs")}
    accepted = set(inspect.signature(combiner).parameters) - {"inputs"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise LesionsegError(
            f"recipe {where}.{unknown[0]}: combiner {node['combine']!r} has no such option "
            f"(options: {', '.join(sorted(accepted)) or 'none'})"
        )
    arity = getattr(combiner, "arity", None)
    if arity is not None and len(node["inputs"]) != arity:
        raise LesionsegError(
            f"recipe {where}.inputs: combiner {node['combine']!r} takes {arity} input(s), "
            f"got {len(node['inputs'])}"
        )
    check_options = getattr(combiner, "check_options", None)
    if check_options is not None:  # e.g. a rule read now rather than at prediction time
        try:
            check_options(**options)
        except (TypeError, ValueError) as err:
            raise LesionsegError(f"recipe {where}: {err}") from None
    inputs = [
        check_graph(c, networks, f"{where}.inputs[{i}]") for i, c in enumerate(node["inputs"])
    ]
    return {"combine": str(node["combine"]), "inputs": inputs, **options}


@dataclass
class NetworkInput:
    """A network as a graph input, on one preprocessed image.

    Attributes:
        model: The network (eval mode).
        image: ``(C, *spatial)`` preprocessed image.
        mask: Brain mask or None.
        predict: ``predict(model, image, mask) -> (K, *spatial)``, the dense predictor with
            the run's settings (tiles, device, flips, slice axis) bound.
        channel_names: Names of the image channels (for combiners' voxel rules).
        dropout: Keep dropout active in patch classification too (a Monte-Carlo pass).
    """

    model: nn.Module
    image: np.ndarray
    mask: np.ndarray | None
    predict: Callable[[nn.Module, np.ndarray, np.ndarray | None], np.ndarray]
    channel_names: Sequence[str] = field(default_factory=list)
    dropout: bool = False

    @property
    def subject(self):
        """The image as a label-free subject, for voxel rules (channels by name)."""
        from lesionseg.sampling.base import ArraySubject

        mask = self.mask if self.mask is not None else np.ones(self.image.shape[1:], np.uint8)
        return ArraySubject("", self.image, None, mask, channel_names=list(self.channel_names))

    def restricted(self, where: np.ndarray) -> NetworkInput:
        """The same input asked only about the voxels of ``where`` (and of the mask)."""
        mask = where if self.mask is None else where & (self.mask > 0)
        return dataclasses.replace(self, mask=mask)

    def dense(self, where: np.ndarray | None = None) -> np.ndarray:
        """Dense probabilities (only the voxels of ``where`` and the mask matter)."""
        if where is not None:
            return self.restricted(where).dense()
        return self.predict(self.model, self.image, self.mask)

    def at(self, points: np.ndarray, probability: np.ndarray | None = None) -> np.ndarray:
        """A patch classifier's probabilities at voxel centres (zeros outside the image).

        ``probability``: the foreground map of the graph's segmenter, for a classifier whose
        input includes it (MUSCLE Net).
        """
        from lesionseg.inference.patches import classify_at
        from lesionseg.inference.predictor import set_dropout

        if not self.dropout:
            return classify_at(self.model, self.image, points, probability)
        set_dropout(self.model, True)
        try:
            return classify_at(self.model, self.image, points, probability)
        finally:
            set_dropout(self.model, False)


@dataclass
class SubgraphInput:
    """A combiner node as the input of another combiner."""

    node: dict
    inputs: Mapping[str, NetworkInput]

    def dense(self, where: np.ndarray | None = None) -> np.ndarray:
        """The node's combined probabilities (its networks asked only about ``where``)."""
        inputs = self.inputs
        if where is not None:
            inputs = {name: item.restricted(where) for name, item in inputs.items()}
        return evaluate(self.node, inputs)

    @property
    def subject(self):
        """The image the node's networks see, as a label-free subject."""
        return next(iter(self.inputs.values())).subject

    def at(self, points: np.ndarray, probability: np.ndarray | None = None) -> np.ndarray:
        """Only a network can classify patches."""
        raise LesionsegError(
            f"combiner {self.node['combine']!r} cannot be asked for patches; give a network"
        )


def evaluate(node: GraphNode, inputs: Mapping[str, NetworkInput]) -> np.ndarray:
    """Run a graph on one image: ``(K, *spatial)`` float32 probabilities."""
    if isinstance(node, str):
        return inputs[node].dense()
    children: Sequence = [
        inputs[c] if isinstance(c, str) else SubgraphInput(c, inputs) for c in node["inputs"]
    ]
    options = {k: v for k, v in node.items() if k not in ("combine", "inputs")}
    return COMBINERS.get(node["combine"])(children, **options)
