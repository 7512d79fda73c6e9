"""Trained models on disk: ``model.safetensors`` (weights) + ``config.json`` (everything else).

Loading never unpickles anything: the weights are read with safetensors and the
network is rebuilt from the registry with the options saved in the config::

    {
      "recipe": {"model": {"name": "deepmedic", "widths": [...]}, ...},
      "channel_names": ["T1", "FLAIR"],
      "labels": {"0": "background", "1": "lesion"},
      "preprocess": {...},
      "lesionseg_version": "0.1.0"
    }
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lesionseg import __version__
from lesionseg.data.atomic import atomic_path, write_json_atomic
from lesionseg.errors import LesionsegError
from lesionseg.models.builder import ModelSpec, build_model

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
REQUIRED_KEYS = ("recipe", "channel_names", "labels")


def model_spec(config: dict) -> tuple[str, dict[str, Any]]:
    """The model's registry name and options from a model config (``recipe.model``).

    Raises:
        LesionsegError: No ``recipe.model.name``.
    """
    spec = ModelSpec.parse((config.get("recipe") or {}).get("model"), "config recipe.model")
    return spec.name, dict(spec.options)


def num_classes_of(config: dict) -> int:
    """Output maps of the model described by ``config``.

    ``recipe.model.num_classes`` when given (e.g. 1 for a sigmoid model), else the
    number of labels (max label value + 1).
    """
    spec = (config.get("recipe") or {}).get("model") or {}
    if isinstance(spec, dict) and spec.get("num_classes") is not None:
        return int(spec["num_classes"])
    labels = [int(k) for k in config["labels"]]
    return max(labels) + 1 if labels else 2


def build_from_config(config: dict) -> nn.Module:
    """Build the (untrained) network described by a model config."""
    name, options = model_spec(config)
    options.pop("num_classes", None)
    options.pop("in_channels", None)
    return build_model(
        ModelSpec(name, options),
        len(config["channel_names"]),
        num_classes_of(config),
        slice_axis=int(config.get("slice_axis", 2)),
    )


def _jsonable(obj: Any) -> Any:
    """Tuples → lists, numpy scalars → Python, int dict keys → str (JSON round trip)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def save_model(model: nn.Module, config: dict, folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder``, atomically.

    Args:
        model: The network (a DistributedDataParallel wrapper is unwrapped).
        config: ``recipe`` (with ``model: {name, options...}``), ``channel_names``,
            ``labels``, ``preprocess``; ``lesionseg_version`` is added.
        folder: Model folder (created).
        overwrite: Replace an existing model in ``folder``.

    Returns:
        The folder.

    Raises:
        LesionsegError: A model exists there and ``overwrite`` is False, or the config
            lacks a required key.
    """
    folder = Path(folder)
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise LesionsegError(f"model config lacks {', '.join(missing)}")
    model_spec(config)
    if not overwrite:
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            if (folder / name).exists():
                raise LesionsegError("holds a model already; use --overwrite to replace it", folder)
    module = getattr(model, "module", model)
    # safetensors refuses shared or non-contiguous storage: copy every tensor.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    full = {**_jsonable(config), "lesionseg_version": __version__}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "lesionseg_version": __version__})
    write_json_atomic(folder / CONFIG_NAME, full)
    return folder


def read_config(folder: str | Path) -> dict:
    """The ``config.json`` of a model folder, checked.

    Raises:
        LesionsegError: Missing folder or file, invalid JSON, missing keys.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LesionsegError("model folder not found", folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise LesionsegError(f"not a model folder (no {CONFIG_NAME})", folder)
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LesionsegError(f"invalid JSON ({err})", path) from None
    if not isinstance(config, dict):
        raise LesionsegError("expected a JSON object", path)
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise LesionsegError(f"lacks {', '.join(missing)}", path)
    check_config_types(config, path)
    return config


def _type_error(path: Path, key: str, expected: str, value: Any) -> LesionsegError:
    shown = repr(value) if len(repr(value)) < 40 else type(value).__name__
    return LesionsegError(f"{key} must be {expected}, found {shown}", path)


def check_config_types(config: dict, path: Path) -> None:
    """Check the value types of a model's ``config.json``, naming the first bad key.

    Raises:
        LesionsegError: A value of the wrong type or shape.
    """
    names = config["channel_names"]
    if not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names):
        raise _type_error(path, "channel_names", "a non-empty list of names", names)
    if len(set(names)) != len(names):
        raise LesionsegError(f"channel_names has a name twice ({names})", path)
    labels = config["labels"]
    if not isinstance(labels, dict) or not labels:
        raise _type_error(path, "labels", "a mapping of label values to names", labels)
    if not all(str(k).lstrip("-").isdigit() and isinstance(v, str) for k, v in labels.items()):
        raise _type_error(path, "labels", 'like {"0": "background", "1": "lesion"}', labels)
    recipe = config["recipe"]
    if not isinstance(recipe, dict):
        raise _type_error(path, "recipe", "a mapping", recipe)
    for key in ("preprocess",):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise _type_error(path, key, "a mapping", config[key])
    axis = config.get("slice_axis", 2)
    if isinstance(axis, bool) or not isinstance(axis, int) or axis not in (0, 1, 2):
        raise _type_error(path, "slice_axis", "0, 1 or 2", axis)
    try:
        model_spec(config)
        num_classes_of(config)
    except (TypeError, ValueError) as err:
        raise LesionsegError(f"recipe.model: {err}", path) from None
    except LesionsegError as err:
        raise LesionsegError(str(err), path) from None


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a saved model (in eval mode) and return it with its config.

    Args:
        folder: A folder written by :func:`save_model`.
        device: Where to put the weights.

    Raises:
        LesionsegError: Missing or corrupt files, or weights that do not fit the
            architecture in the config.
    """
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise LesionsegError(f"not a model folder (no {WEIGHTS_NAME})", folder)
    try:
        model = build_from_config(config)
    except (TypeError, ValueError) as err:
        raise LesionsegError(f"cannot build the model it describes ({err})", folder) from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise LesionsegError(f"cannot read the weights ({err})", weights) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        # A network with NaN or Inf weights predicts background everywhere: refuse it.
        raise LesionsegError(
            f"{len(bad)} weight tensor(s) hold NaN or Inf values (first: {bad[0]})", weights
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else "mismatch"
        raise LesionsegError(
            f"weights do not match the architecture in {CONFIG_NAME} ({first})", weights
        ) from None
    return model.to(device).eval(), config
