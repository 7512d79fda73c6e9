"""``lesionseg describe``: what a recipe or a trained model is, before spending time on training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from lesionseg.errors import LesionsegError

if TYPE_CHECKING:  # torch loads when the command runs, not when `lesionseg --help` starts
    from torch import nn

NAME = "describe"
ORDER = 32
HELP = "layers, parameter counts, receptive field and example sizes of a recipe or model"
DESCRIPTION = """Print the network a recipe builds (or a trained model folder holds): its layers
with output shapes for one training example, the parameter count as PyTorch counts it and as
Keras counts it (with batch-norm running statistics, as papers built with Keras report), the
receptive field, and the input and output sizes of a training example for each stage.

examples:
  lesionseg describe deepmedic-paper --channels 4 --classes 5
  lesionseg describe models/ms-tiny"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg describe``."""
    parser.add_argument("source", help="recipe file, packaged recipe name, or model folder")
    parser.add_argument(
        "--channels", type=int, help="input channels for a recipe (default: its own, else 1)"
    )
    parser.add_argument(
        "--classes", type=int, help="classes incl. background (default: the recipe's, else 2)"
    )
    parser.add_argument("--no-layers", action="store_true", help="skip the layer table")


def _count(model: nn.Module, keras: bool) -> int:
    try:
        from lesionseg.models.counting import param_count
    except ImportError:  # pragma: no cover - counting ships with the models package
        from torch.nn.modules.batchnorm import _BatchNorm

        extra = (
            sum(
                2 * m.num_features
                for m in model.modules()
                if isinstance(m, _BatchNorm) and m.track_running_stats
            )
            if keras
            else 0
        )
        return sum(p.numel() for p in model.parameters()) + extra
    return param_count(model, keras=keras)


def example_shapes(stage: dict, model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of one training example of ``stage``, asked of its sampler on a dummy subject."""
    import numpy as np

    from lesionseg.sampling import SAMPLERS, ArraySubject

    geometry = model.geometry
    if geometry.patch_size is not None:  # one patch in, one label out, whatever the sampler
        return {"image": (geometry.input_channels_total, *geometry.patch_size), "target": ()}
    spec = dict(stage["sampler"])
    name = spec.pop("name")
    size = 32
    label = np.zeros((size,) * 3, np.uint8)
    label[size // 2, size // 2, size // 2] = 1
    image = np.zeros((geometry.in_channels, *label.shape), np.float32)
    dummy = ArraySubject("dummy", image, label, np.ones_like(label))
    sampler = SAMPLERS.build(name, subjects=[dummy], geometry=geometry, context={}, **spec)
    return sampler.example_shapes()


def _epoch_length(stage: dict) -> str:
    if stage["sampler"].get("order") == "enumerate":
        return "every example once"
    return f"{stage['batches_per_epoch']} batches"


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """One line per leaf module: name, type, output shape, parameters (for one example)."""
    import torch

    rows: list[tuple[str, str, str, int]] = []
    hooks = []
    for name, module in model.named_modules():
        if list(module.children()) or name == "":
            continue

        def hook(mod, _inputs, output, name=name):
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else "-"
            count = sum(p.numel() for p in mod.parameters(recurse=False))
            rows.append((name, type(mod).__name__, str(shape), count))

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    width = max([len(r[0]) for r in rows] + [5])
    lines = [f"  {'layer':<{width}}  {'type':<14} {'output (C, *spatial)':<24} {'params':>9}"]
    lines += [f"  {n:<{width}}  {t:<14} {s:<24} {c:>9,}" for n, t, s, c in rows]
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the description."""
    from lesionseg.training.recipe import load_recipe, recipe_from_dict
    from lesionseg.training.trainer import build_network

    source = Path(args.source)
    if source.is_dir():
        from lesionseg.models.io import load_model

        model, config = load_model(source)
        recipe = recipe_from_dict(config["recipe"], Path(source) / "config.json")
        channels, labels = list(config["channel_names"]), config["labels"]
        if args.channels or args.classes:
            raise LesionsegError("--channels/--classes apply to recipes; a model has its own")
        header = (
            f"model {source} (recipe {recipe.name}): channels {', '.join(channels)}; "
            f"labels {', '.join(f'{k} {v}' for k, v in labels.items())}"
        )
    else:
        recipe = load_recipe(args.source)
        # the recipe's own data: the channels it names (channels: [DWI]), or those it
        # was written for (expects: {channels: 4, classes: 5})
        expects = recipe.data.get("expects") or {}
        channels = (
            args.channels or len(recipe.data.get("channels") or ()) or expects.get("channels") or 1
        )
        classes = args.classes or expects.get("classes") or 2
        if channels < 1 or classes < 1:
            raise LesionsegError("--channels and --classes must be ≥ 1")
        model = build_network(recipe.data["stages"][0]["model"], channels, classes, seed=0)
        header = (
            f"recipe {recipe.name} ({recipe.source}) built for {channels} channel(s), "
            f"{classes} class(es)"
        )
    lines = [header]
    from lesionseg.training.recipe import is_train

    stages = [s for s in recipe.stages() if is_train(s)]  # predict stages build nothing
    networks = {}
    for stage in stages:
        networks.setdefault(stage["network"], stage)
    for net_name, first_stage in networks.items():
        net = (
            model
            if first_stage is stages[0] or len(networks) == 1
            else build_network(
                first_stage["model"], model.geometry.in_channels, model.geometry.num_classes, 0
            )
        )
        geometry = net.geometry
        spec = first_stage["model"]
        lines.append("")
        lines.append(
            f"network {net_name!r}: {spec['name']} "
            + " ".join(f"{k}={v}" for k, v in spec["options"].items())
        )
        lines.append(
            f"  parameters: {_count(net, False):,} (PyTorch), "
            f"{_count(net, True):,} (Keras, with batch-norm running statistics)"
        )
        fields = dict(geometry.receptive_fields)
        if fields:
            first = next(iter(fields.values()))
            lines.append(f"  receptive field: {first} voxels per axis")
        for path, field in fields.items():
            lines.append(f"    {path}: {field}")
        if geometry.is_valid_convolution:
            lines.append(
                f"  context (input voxels per output voxel, all pathways): "
                f"{'×'.join(map(str, geometry.context))}; output = input − "
                f"{geometry.context[0] - 1}, sizes multiple of "
                f"{'×'.join(map(str, geometry.size_multiple))}"
            )
        elif geometry.patch_size is not None:
            lines.append(
                f"  patch classifier: input {'×'.join(map(str, geometry.patch_size))}, "
                "one output voxel"
            )
        else:
            lines.append(
                f"  same-size output; input a multiple of "
                f"{'×'.join(map(str, geometry.size_multiple))}"
            )
        if sum(geometry.slice_context):
            lines.append(
                f"  slice stack: {geometry.slice_context[0]} before, "
                f"{geometry.slice_context[1]} after the target slice"
            )
        shapes = None
        for stage in stages:
            if stage["network"] != net_name:
                continue
            try:
                shapes = example_shapes(stage, net)
            except Exception as err:  # noqa: BLE001 - a sampler may need real data
                lines.append(f"  stage {stage['name']!r}: example sizes need data ({err})")
                continue
            image, target = shapes["image"], shapes["target"]
            lines.append(
                f"  stage {stage['name']!r}: input {image[0]} × {'×'.join(map(str, image[1:]))}"
                f" → output {'×'.join(map(str, target)) or 'one value'}; batch "
                f"{stage['batch_size']}, {_epoch_length(stage)} × {stage['epochs']} epochs"
            )
            pathway_sizes = getattr(net, "pathway_input_sizes", None)
            if callable(pathway_sizes) and len(target) == len(image) - 1:
                for path, size in pathway_sizes(target).items():
                    lines.append(f"    {path} pathway input: {'×'.join(map(str, size))}")
        if shapes is not None and not args.no_layers:
            lines.append("  layers (one training example):")
            lines += layer_table(net, shapes["image"])
    predict = recipe.data["predict"]
    if len(networks) > 1 or not isinstance(predict["graph"], str):
        lines += ["", f"prediction graph: {json.dumps(predict['graph'])}"]
    for name, variant in (predict.get("variants") or {}).items():
        lines.append(
            f"variant {name!r} (lesionseg predict --variant {name}): {json.dumps(variant)}"
        )
    print("\n".join(lines))
    return 0
