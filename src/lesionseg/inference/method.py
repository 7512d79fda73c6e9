"""A trained method on disk: its networks and the prediction graph that joins them.

A model folder holds the final network at its root (``model.safetensors`` +
``config.json``), every other network under ``networks/<name>/``, and ``method.json``::

    {"format": 1,
     "graph": {"combine": "product", "inputs": ["first", "second"]},
     "networks": {"first": "networks/first", "second": "."}}

A folder without ``method.json`` (one network) is the method "that network". Loading
runs no code: the graph names registered combiners, the networks are rebuilt from their
configs and safetensors weights, and every network path must lie inside the folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lesionseg.data.atomic import write_json_atomic
from lesionseg.data.ownership import is_inside
from lesionseg.errors import LesionsegError
from lesionseg.inference.graph import GraphNode, NetworkInput, check_graph, evaluate
from lesionseg.inference.predictor import num_outputs, predict_volume

METHOD_NAME = "method.json"
METHOD_FORMAT = 1


@dataclass
class LoadedMethod:
    """A trained method: networks, their configs, the graph, and where it came from.

    Attributes:
        config: The final network's config (recipe, channels, labels, preprocessing).
        networks: Network name → network (eval mode).
        network_configs: Network name → its config (slice axis, recipe tile).
        graph: The prediction graph over the networks' names.
        folder: The model folder.
    """

    config: dict
    networks: dict[str, nn.Module]
    network_configs: dict[str, dict]
    graph: GraphNode
    folder: Path | None = None

    @property
    def variants(self) -> dict[str, dict]:
        """The recipe's prediction variants: name → {graph, postprocess} (either optional)."""
        predict = (self.config.get("recipe") or {}).get("predict") or {}
        return dict(predict.get("variants") or {})

    def variant(self, name: str) -> LoadedMethod:
        """The method with a prediction variant's graph and post-processing.

        Raises:
            LesionsegError: The recipe has no variant of that name, or its graph names a
                network the folder does not hold.
        """
        import copy

        variants = self.variants
        if name not in variants:
            known = ", ".join(sorted(variants)) or "none"
            raise LesionsegError(
                f"--variant: the model has no prediction variant {name!r} (variants: {known})",
                self.folder,
            )
        chosen = variants[name]
        graph = self.graph
        if "graph" in chosen:
            graph = check_graph(chosen["graph"], set(self.networks), f"variants.{name}.graph")
        config = copy.deepcopy(self.config)
        if "postprocess" in chosen:
            config["recipe"]["predict"]["postprocess"] = copy.deepcopy(chosen["postprocess"])
        return LoadedMethod(config, self.networks, self.network_configs, graph, self.folder)

    @property
    def channel_names(self) -> list[str]:
        """The method's input channels, in order."""
        return list(self.config["channel_names"])

    @property
    def data_channel_names(self) -> list[str]:
        """The training data set's channels in file order (``<case>_0000``, ``_0001``, …).

        More than :attr:`channel_names` when the recipe read only some of them.
        """
        return list(self.config.get("data_channel_names") or self.channel_names)

    @property
    def num_outputs(self) -> int:
        """Probability maps the method gives."""
        final = self.networks[self.config.get("network", next(iter(self.networks)))]
        return num_outputs(final.geometry)

    def predict(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        tile_size: int | None = None,
        **kwargs,
    ) -> np.ndarray:
        """``(K, *spatial)`` probabilities of the method on a preprocessed image.

        Args:
            image: ``(C, *spatial)`` preprocessed image.
            mask: Brain mask, or None.
            tile_size: Tile side (None: each network's recipe ``predict.tile``, else from
                the free memory).
            **kwargs: Passed to :func:`~lesionseg.inference.predictor.predict_volume`.
        """
        inputs = {}
        for name, network in self.networks.items():
            config = self.network_configs[name]
            recipe_tile = ((config.get("recipe") or {}).get("predict") or {}).get("tile")
            bound = dict(kwargs, tile_size=tile_size or recipe_tile)
            bound["axis"] = network.geometry.slice_axis  # the axis it was trained on

            def run(model, img, where, bound=bound):
                return predict_volume(model, img, mask=where, **bound)

            inputs[name] = NetworkInput(
                network, image, mask, run, self.channel_names, bool(kwargs.get("dropout"))
            )
        return evaluate(self.graph, inputs)


def write_method(folder: str | Path, graph: GraphNode, networks: Mapping[str, str]) -> None:
    """Write ``method.json``: the graph and each network's folder (relative)."""
    write_json_atomic(
        Path(folder) / METHOD_NAME,
        {"format": METHOD_FORMAT, "graph": graph, "networks": dict(networks)},
    )


def _read_method(folder: Path) -> tuple[GraphNode, dict[str, Path]] | None:
    path = folder / METHOD_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LesionsegError(f"cannot read it ({type(err).__name__})", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("networks"), dict):
        raise LesionsegError("expected {format, graph, networks: {name: folder}}", path)
    networks = {}
    for name, relative in data["networks"].items():
        place = folder / str(relative)
        if (
            not isinstance(relative, str)
            or Path(relative).is_absolute()
            or not is_inside(place, folder)
        ):
            raise LesionsegError(f"network {name!r} must lie inside the model folder", path)
        networks[str(name)] = place
    try:
        graph = check_graph(data.get("graph"), set(networks), "graph")
    except LesionsegError as err:
        raise LesionsegError(str(err).replace("recipe ", "", 1), path) from None
    return graph, networks


def load_method(folder: str | Path, device: str | torch.device = "cpu") -> LoadedMethod:
    """Load a model folder as a method (its networks and graph).

    Raises:
        LesionsegError: A bad folder, ``method.json`` or network.
    """
    from lesionseg.models.io import load_model

    folder = Path(folder)
    model, config = load_model(folder, device=device)
    own = str(config.get("network", "main"))
    found = _read_method(folder)
    if found is None:
        return LoadedMethod(config, {own: model}, {own: config}, own, folder)
    graph, places = found
    networks, configs = {}, {}
    for name, place in places.items():
        if place.resolve() == folder.resolve():
            networks[name], configs[name] = model, config
        else:
            networks[name], configs[name] = load_model(place, device=device)
    return LoadedMethod(config, networks, configs, graph, folder)
