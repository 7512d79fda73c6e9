"""Export one trained network to ONNX, with what a runtime needs to use it as metadata.

``lesionseg export MODEL_DIR -o model.onnx`` writes the network that a single-network
method predicts with (``--network NAME`` picks one of a multi-network method: the
cascade's ``first``, EDD + MUSCLE's ``edd``); the combination of several networks (a
prediction graph) is lesionseg's and is not exported. The graph takes ``image`` of shape
``(N, C, *size)``, ``N`` free, the spatial size fixed at export (``--size``, rounded to
what the network accepts), and returns the logits (the refined ones for EDD Net). The
model's ``metadata_props`` hold ``lesionseg_config`` (channel names and order, labels,
preprocessing, recipe, network) and ``lesionseg_geometry`` (input/output sizes, output
activation), as JSON.

Exported with PyTorch's dynamo exporter; every registered network exports, max-unpooling
(EDD Net) included. DeepMedic is exported in its eval-time form (batch norms folded into
the convolutions), which is what the predictor runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lesionseg.errors import LesionsegError
from lesionseg.models.fast_eval import inference_network


def export_size(geometry, size: Sequence[int] | None) -> tuple[int, ...]:
    """The input spatial size to export: a patch classifier's patch, else ``size`` rounded.

    Default ``size``: 128 per in-plane axis for 2D networks; 64 output voxels per axis in 3D.
    """
    if geometry.patch_size is not None:
        return tuple(int(p) for p in geometry.patch_size)
    dims = geometry.spatial_dims
    wanted = tuple(size) if size else ((128,) * dims if dims == 2 else (64,) * dims)
    if len(wanted) == 1:
        wanted = wanted * dims
    if len(wanted) != dims:
        raise LesionsegError(f"--size takes 1 or {dims} values for this {dims}D network")
    return geometry.input_size(tuple(int(w) for w in wanted))


def export_onnx(
    model_dir: str | Path,
    output: str | Path,
    network: str | None = None,
    size: Sequence[int] | None = None,
    overwrite: bool = False,
) -> dict:
    """Export a model folder's network to ``output`` (``.onnx``), written atomically.

    Returns:
        What was exported: network name, input shape, output shape.

    Raises:
        LesionsegError: An unknown network, a graph of several networks without
            ``network``, an existing output without ``overwrite``, or an export failure.
    """
    import torch

    from lesionseg.data.atomic import atomic_path
    from lesionseg.inference.method import load_method

    output = Path(output)
    if output.suffix != ".onnx":
        raise LesionsegError("the output must end in .onnx", output)
    if output.exists() and not overwrite:
        raise LesionsegError("exists already; use --overwrite to replace it", output)
    method = load_method(model_dir)
    if network is None:
        if not isinstance(method.graph, str):
            names = ", ".join(method.networks)
            raise LesionsegError(
                f"this method combines several networks ({names}); choose one with --network"
            )
        network = method.graph
    if network not in method.networks:
        raise LesionsegError(
            f"--network: no network {network!r} (networks: {', '.join(method.networks)})"
        )
    model = method.networks[network].eval()
    model = inference_network(model).eval()  # what the predictor runs
    geometry = model.geometry
    shape = (1, geometry.input_channels_total, *export_size(geometry, size))
    example = torch.zeros(shape)
    with torch.no_grad():
        logits = model(example)
    logits = logits[0] if isinstance(logits, tuple | list) else logits
    config = method.network_configs[network]
    metadata = {
        "lesionseg_config": json.dumps({**config, "network": network}, default=str),
        "lesionseg_geometry": json.dumps(
            {
                "input_shape": list(shape),
                "output_shape": list(logits.shape),
                "output_activation": geometry.output_activation,
                "spatial_dims": geometry.spatial_dims,
                "slice_context": list(geometry.slice_context),
            }
        ),
    }
    import logging
    import warnings

    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes (torchvision absent, ...) are not ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=({0: "batch"},),
                dynamo=True,
                optimize=False,
                verbose=False,
            )
    except Exception as err:  # the exporter's own failure, for one line
        raise LesionsegError(f"ONNX export of {network!r} failed: {err}") from None
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    import onnx

    with atomic_path(output, overwrite=overwrite) as tmp:
        onnx.save(proto, str(tmp))
    return {"network": network, "input": list(shape), "output": list(logits.shape)}
