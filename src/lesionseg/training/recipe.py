"""Recipes: YAML files that name a method's parts and settings, validated before training.

A recipe has these sections (all but ``model`` and ``sampler`` optional)::

    name: deepmedic-tiny
    channels: [DWI]                                     # default: every channel of the data
    expects: {channels: 4, classes: 5}                  # what `describe` builds by default
    model: {name: deepmedic, ...options}
    preprocess: {target_spacing: [1, 1, 1], ...}        # PreprocessConfig fields
    sampler: {name: segments, output_size: [9, 9, 9], augment: [...], ...}
    loss: {name: cross_entropy, ...}
    optimizer: {name: rmsprop-nesterov, lr: 1.0e-3, ...}
    schedule: {name: plateau, patience: 3}
    train: {epochs: 35, batch_size: 10, batches_per_epoch: 100, l1: 0, l2: 0, workers: 1,
            amp: true, grad_clip: null, early_stopping: {patience: 5, min_delta: 0}}
    stages:                                          # default: one stage "main"
      - {name: warmup, epochs: 5, sampler: {augment_probability: 0}, loss: {...}}
      - {name: main, network: second, model: {...}, optimizer: {...}}
    validation: {every: 5, cases: 0.2}
    predict: {tile: [45, 45, 45], postprocess: [...], graph: {combine: product, inputs: [a, b]}}

``batch_size`` is the batch of the whole run: under torchrun each of N processes draws
``batch_size / N`` examples. ``early_stopping.patience`` counts validations without an
improvement of the validation Dice by more than ``min_delta``; ``l1``/``l2`` penalise
convolution and fully connected weights only.

A stage takes every ``train`` key (``epochs``, ``batch_size``, …) and may override
``sampler``, ``loss``, ``optimizer`` and ``schedule``: an override with the same
``name`` (or none) is merged into the recipe's section, one with another name
replaces it. ``network`` names the network the stage trains (default ``main``);
a stage that names a new network builds it from its own ``model`` section (default:
the recipe's), so the cascade's two networks and EDD-then-MUSCLE fit one run.
``optimizer: continue`` keeps the network's optimiser state, schedule position and
gradient scaler from its previous stage (a curriculum on one network); without it a
stage starts a fresh optimiser. ``select: best`` (default) keeps the weights of the
best validation Dice within the stage, ``select: last`` those at the stage's end.

:func:`load_recipe` accepts a path or the name of a packaged recipe
(``lesionseg/configs/<name>.yaml``); :meth:`Recipe.resolved` is the complete recipe
with every default filled in, which is what gets saved with a model.

Reading a recipe never imports anything it names: parts are looked up in the
registries, which hold lesionseg's own parts and those of installed plugin packages
(entry-point group :data:`PLUGIN_GROUP`, see :func:`import_parts`). A recipe travels
inside every model folder, so a module name in it would run a stranger's code.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lesionseg.errors import LesionsegError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

SECTIONS = (
    "name", "description", "imports", "seed", "channels", "expects", "model", "preprocess",
    "sampler", "loss", "optimizer", "schedule", "train", "stages", "validation", "predict",
)  # fmt: skip

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 10,
    "batches_per_epoch": 100,
    "l1": 0.0,
    "l2": 0.0,
    "workers": 1,
    "amp": True,  # only takes effect on CUDA
    # null: float16 autocast on CUDA when amp, float32 on the CPU; fp32: never autocast;
    # bf16: bfloat16 autocast on the CPU and CUDA; auto: float16 on CUDA, bfloat16 on
    # CPUs that compute it in hardware, else float32. The loss is always float32.
    "precision": None,
    # contiguous or channels_last: the memory layout of the network and its batches
    "layout": "contiguous",
    "early_stopping": None,  # {patience: N (validations), min_delta: d}
    "grad_clip": None,
}
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    # the data set's channels the networks read, in this order (None: all of them); EDD
    # Net reads DWI alone from DWI + ADC data
    "channels": None,
    # the data the recipe was written for ({channels: 4, classes: 5}: BRATS): what
    # `lesionseg describe RECIPE` builds by default; training checks nothing against it
    "expects": None,
    "preprocess": {},
    "loss": {"name": "cross_entropy"},
    "optimizer": {"name": "adam", "lr": 1e-3},
    "schedule": {"name": "constant"},
    # metric dice: the prediction graph segments held-out cases; loss: the stage's loss on
    # examples its sampler held out (the cascade's 25 % of patches), at most `examples`
    "validation": {
        "every": 1,
        "cases": 0.2,
        "tile": None,
        "max_cases": 10,
        "metric": "dice",
        "examples": None,
    },
    "predict": {"tile": None, "postprocess": [], "graph": None, "variants": None},
}
STAGE_PARTS = ("sampler", "loss", "optimizer", "schedule")
#: What validation measures: the graph's Dice on held-out cases (higher is better), or the
#: stage's loss on examples its sampler held out (lower is better).
VALIDATION_METRICS = ("dice", "loss")
#: How a stage chooses the weights it keeps: the best validation Dice within the stage, or
#: the weights at its end.
SELECT_CHOICES = ("best", "last")
STAGE_KEYS = (
    "name", "kind", "network", "model", *STAGE_PARTS, *TRAIN_DEFAULTS, "select",
    "continue_optimizer",
)  # fmt: skip
#: A predict stage runs networks trained so far (a graph over them) on the training subjects
#: and stores their probabilities in the cache, for the samplers of later stages.
PREDICT_STAGE_KEYS = ("name", "kind", "predict", "subjects")
#: ``optimizer: continue`` in a stage keeps the network's optimiser, schedule and scaler.
CONTINUE = "continue"

# Arguments the engine passes to part factories itself; a recipe must not set them.
ENGINE_ARGS = {
    "model": (),  # in_channels and num_classes come from the data unless the recipe sets them
    "sampler": ("subjects", "geometry", "context", "seed"),
    "optimizer": ("params",),
    "schedule": ("base_lr", "epochs"),
    "loss": (),
    # the probabilities, and the context of lesionseg.postprocess.chain.CONTEXT
    "postprocess": ("probabilities", "image", "mask", "spacing", "labels"),
}


#: Stage and network names become folder and file names (networks/<name>, outputs/<stage>).
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _channel_list(value: Any) -> list[str] | None:
    """The recipe's ``channels``: None, or distinct channel names."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _err("channels", f"must be a list of channel names (e.g. [DWI]), got {value!r}")
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise _err("channels", f"names {', '.join(repeated)} more than once")
    return list(value)


def _expected_data(value: Any) -> dict[str, int] | None:
    """The recipe's ``expects``: None, or ``{channels: C, classes: K}`` (either optional)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"channels", "classes"}:
        raise _err("expects", f"must be {{channels: C, classes: K}}, got {value!r}")
    for key, least in (("channels", 1), ("classes", 2)):
        number = value.get(key)
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int) or number < least
        ):
            raise _err(f"expects.{key}", f"must be a whole number >= {least}, got {number!r}")
    return dict(value)


def _safe_name(value: Any, where: str) -> str:
    """A stage or network name: letters, digits, ``_ . -``, not starting with a dot."""
    name = str(value)
    if not _SAFE_NAME.match(name) or ".." in name:
        raise _err(
            where,
            f"{name!r} is not a usable name: letters, digits, '_', '.' and '-' only, starting "
            "with a letter or digit (it names folders and files)",
        )
    return name


def _err(where: str, message: str) -> LesionsegError:
    return LesionsegError(f"recipe {where}: {message}")


def _merge(base: dict, override: dict) -> dict:
    """Override a part: same (or no) name → merge the options, other name → replace."""
    if override.get("name", base.get("name")) != base.get("name"):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _model_section(raw: Any, where: str) -> dict:
    """Normalise ``{name, ...options}`` or ``{name, options: {...}}`` to ``{name, options}``."""
    from lesionseg.models.builder import ModelSpec

    spec = ModelSpec.parse(raw, f"recipe {where}")  # its errors name the key as _err does
    return {"name": spec.name, "options": spec.options}


#: Entry-point group under which installed packages declare modules that register parts.
PLUGIN_GROUP = "lesionseg.parts"


def import_parts() -> None:
    """Import every module that registers parts (models, losses, samplers, ...).

    lesionseg's own part packages, then the plugins of installed packages: a package
    declares ``[project.entry-points."lesionseg.parts"] my_parts = "my_package.parts"``
    and its module is imported here. Only code the user installed runs; nothing named in
    a recipe, config or model folder is ever imported.

    Raises:
        LesionsegError: An installed plugin fails to import (naming it).
    """
    import pkgutil
    from importlib.metadata import entry_points

    for package_name in ("lesionseg.models", "lesionseg.losses", "lesionseg.postprocess"):
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
            if not info.name.startswith("_"):
                try:
                    importlib.import_module(f"{package_name}.{info.name}")
                except ImportError:  # a part whose optional dependency is not installed
                    continue
    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            plugin.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin must name itself
            raise LesionsegError(
                f"installed plugin {plugin.name!r} ({plugin.value}) of group {PLUGIN_GROUP!r} "
                f"failed to import: {type(err).__name__}: {err}"
            ) from None


def _registries() -> dict[str, Any]:
    from lesionseg.losses import LOSSES
    from lesionseg.models import MODELS
    from lesionseg.sampling import SAMPLERS
    from lesionseg.training.optim import OPTIMIZERS
    from lesionseg.training.schedules import SCHEDULES

    return {
        "model": MODELS,
        "sampler": SAMPLERS,
        "loss": LOSSES,
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
    }


def _check_options(kind: str, factory: Callable, options: dict, where: str) -> None:
    """Fail early, naming the key, when a part does not take an option the recipe gives."""
    reserved = [k for k in options if k in ENGINE_ARGS[kind]]
    if reserved:
        raise _err(f"{where}.{reserved[0]}", "is set by lesionseg itself; remove it")
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = None
        if inspect.isclass(factory):  # **kwargs forwarded to the base class: check those too
            accepted = set()
            for cls in factory.__mro__:
                init = cls.__dict__.get("__init__")
                if init is None:
                    continue
                sig = inspect.signature(init).parameters
                accepted |= set(sig)
                if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
                    break
            else:
                accepted = None
    else:
        accepted = set(params)
    if accepted is not None:
        unknown = [k for k in options if k not in accepted]
        if unknown:
            known = sorted(
                k
                for k in accepted
                if k not in ("self", "args", "kwargs") and k not in ENGINE_ARGS[kind]
            )
            raise _err(
                f"{where}.{unknown[0]}",
                f"unknown option of {kind} "
                f"{getattr(factory, '__name__', '')!s} (known: {', '.join(known)})",
            )


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _err(where, f"must be a positive integer, got {value!r}")
    return value


def _non_negative(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _err(where, f"must be a number ≥ 0, got {value!r}")
    return float(value)


@dataclass
class Recipe:
    """A validated recipe.

    Attributes:
        data: The resolved recipe (all defaults filled in, model as ``{name, options}``).
        source: Where it was read from (a path, or None).
    """

    data: dict[str, Any]
    source: Path | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The recipe's name."""
        return str(self.data.get("name", "recipe"))

    def resolved(self) -> dict[str, Any]:
        """A deep copy of the resolved recipe (what is saved with a model)."""
        return copy.deepcopy(self.data)

    def stages(self) -> list[dict[str, Any]]:
        """Every stage with its complete settings (train keys and the four parts)."""
        return copy.deepcopy(self.data["stages"])

    def to_yaml(self) -> str:
        """The resolved recipe as YAML."""
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None)

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        """A new recipe with dotted keys set (``{"train.epochs": 2}``) and re-validated.

        ``epochs`` and other ``train`` keys set this way apply to every stage.
        """
        if self.raw is not None:  # overrides act on the recipe as written
            raw = copy.deepcopy(self.raw)
            for dotted, value in overrides.items():
                _set_dotted(raw, dotted, value)
            return resolve(raw, self.source)
        raw = copy.deepcopy(self.data)
        # Un-resolve stage values equal to the recipe-wide ones, so overrides reach them.
        for stage in raw.get("stages") or []:
            for key in ("model", *STAGE_PARTS):
                if stage.get(key) == raw.get(key):
                    stage.pop(key, None)
            for key in TRAIN_DEFAULTS:
                if key in stage and stage[key] == raw["train"].get(key):
                    stage.pop(key)
        for dotted, value in overrides.items():
            _set_dotted(raw, dotted, value)
        return resolve(raw, self.source)


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a raw recipe; a ``train.<key>`` override also reaches every stage."""
    keys = dotted.split(".")
    node = raw
    try:
        for key in keys[:-1]:
            if isinstance(node, list):
                node = node[int(key)]
            else:
                if (
                    key == "model"
                    and node is raw
                    and "options" in node.get("model", {})
                    and keys[1] != "options"
                    and keys[1] != "name"
                ):
                    node = node["model"]["options"]  # model.widths → model.options.widths
                    continue
                node = node.setdefault(key, {})
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    except (ValueError, IndexError, TypeError, AttributeError):
        raise _err(dotted, "cannot set this key") from None
    if keys[0] == "train" and len(keys) == 2:
        for stage in raw.get("stages") or []:
            stage.pop(keys[1], None)


def resolve(raw: dict[str, Any], source: Path | None = None) -> Recipe:
    """Fill in defaults and validate a recipe read from YAML.

    Raises:
        LesionsegError: Naming the offending key (``recipe stages[1].optimizer.lr: ...``).
    """
    if not isinstance(raw, dict):
        raise LesionsegError("recipe: expected a mapping at the top level", source)
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise _err(unknown[0], f"unknown section (known: {', '.join(SECTIONS)})")
    data: dict[str, Any] = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key not in STAGE_PARTS:
            data[key] = {**data[key], **copy.deepcopy(value)}
        elif value is not None:
            data[key] = copy.deepcopy(value)
    data.setdefault("name", source.stem if source else "recipe")
    if data.pop("imports", None):
        raise _err(
            "imports",
            "lesionseg never imports modules named in a recipe (a recipe travels in every "
            f"model folder); install your package and declare its modules under the "
            f"entry-point group {PLUGIN_GROUP!r}",
        )
    import_parts()
    registries = _registries()

    if "model" not in raw:
        raise _err("model", "is required (e.g. model: {name: deepmedic})")
    data["model"] = _model_section(raw["model"], "model")
    if "sampler" not in raw:
        raise _err("sampler", "is required (e.g. sampler: {name: segments, output_size: 9})")
    for part in STAGE_PARTS:
        if not isinstance(data.get(part), dict) or "name" not in data[part]:
            raise _err(part, f"must be a mapping with a 'name', got {data.get(part)!r}")

    train = {**TRAIN_DEFAULTS, **(raw.get("train") or {})}
    bad = [k for k in train if k not in TRAIN_DEFAULTS]
    if bad:
        raise _err(f"train.{bad[0]}", f"unknown key (known: {', '.join(TRAIN_DEFAULTS)})")
    data["train"] = train

    stages = _resolve_stages(raw.get("stages") or [{"name": "main"}], data, registries)
    data["stages"] = stages

    val = data["validation"]
    unknown = sorted(set(val) - set(DEFAULTS["validation"]))
    if unknown:
        known = ", ".join(DEFAULTS["validation"])
        raise _err(f"validation.{unknown[0]}", f"unknown key (known: {known})")
    _positive_int(val.get("every"), "validation.every")
    if val.get("metric") not in VALIDATION_METRICS:
        raise _err(
            "validation.metric",
            f"must be one of {', '.join(VALIDATION_METRICS)}, got {val.get('metric')!r}",
        )
    if val.get("examples") is not None:
        _positive_int(val["examples"], "validation.examples")
    cases = val.get("cases")
    if not (isinstance(cases, list) or (isinstance(cases, int | float) and cases >= 0)):
        raise _err(
            "validation.cases", f"must be a count, a fraction or a list of ids, got {cases!r}"
        )
    from lesionseg.preprocess import PreprocessConfig

    data["preprocess"] = PreprocessConfig.from_dict(data["preprocess"]).to_dict()
    unknown = sorted(set(data["predict"]) - set(DEFAULTS["predict"]))
    if unknown:
        known = ", ".join(DEFAULTS["predict"])
        raise _err(f"predict.{unknown[0]}", f"unknown key (known: {known})")
    _check_postprocess(data["predict"].get("postprocess") or [])
    data["predict"]["graph"] = _prediction_graph(data["predict"].get("graph"), stages)
    data["predict"]["variants"] = _prediction_variants(data["predict"].get("variants"), stages)
    if not isinstance(data["seed"], int):
        raise _err("seed", f"must be an integer, got {data['seed']!r}")
    data["channels"] = _channel_list(data.get("channels"))
    data["expects"] = _expected_data(data.get("expects"))
    for i, stage in enumerate(stages):
        if is_train(stage) and stage["model"] not in [s.get("model") for s in stages[:i]]:
            _check_model_builds(stage["model"], f"stages[{i}].model")
    data = {k: data[k] for k in SECTIONS if k in data}
    return Recipe(data, source, copy.deepcopy(raw))


def _resolve_stages(stages_raw: Any, data: dict, registries: dict) -> list[dict]:
    """Every stage with its complete settings: train stages and predict stages."""
    if not isinstance(stages_raw, list):
        raise _err("stages", "must be a list of stages")
    stages: list[dict] = []
    networks: dict[str, dict] = {}
    for i, stage_raw in enumerate(stages_raw):
        where = f"stages[{i}]"
        if not isinstance(stage_raw, dict):
            raise _err(where, f"must be a mapping, got {stage_raw!r}")
        if stage_raw.get("kind") == "predict" or "predict" in stage_raw:
            stages.append(_predict_stage(stage_raw, i, stages))
            continue
        stage = _train_stage(stage_raw, i, data, networks, stages)
        _validate_stage(stage, where, registries)
        stages.append(stage)
    if not any(is_train(s) for s in stages):
        raise _err("stages", "a recipe needs at least one train stage")
    names = [s["name"] for s in stages]
    if len(set(names)) != len(names):
        raise _err("stages", f"stage names must be unique, got {names}")
    return stages


def _train_stage(
    stage_raw: dict, i: int, data: dict, networks: dict[str, dict], stages: list[dict]
) -> dict:
    """A train stage: the recipe's sections merged with the stage's overrides."""
    where = f"stages[{i}]"
    bad = [k for k in stage_raw if k not in STAGE_KEYS]
    if bad:
        raise _err(f"{where}.{bad[0]}", f"unknown key (known: {', '.join(STAGE_KEYS)})")
    stage: dict[str, Any] = {"name": _safe_name(stage_raw.get("name", f"stage{i + 1}"), where)}
    stage["kind"] = "train"
    stage["network"] = _safe_name(stage_raw.get("network", "main"), f"{where}.network")
    if "model" in stage_raw:
        stage["model"] = _model_section(stage_raw["model"], f"{where}.model")
    elif stage["network"] in networks:
        stage["model"] = copy.deepcopy(networks[stage["network"]])
    else:
        stage["model"] = copy.deepcopy(data["model"])
    if stage["network"] in networks and stage["model"] != networks[stage["network"]]:
        raise _err(
            f"{where}.model",
            f"network {stage['network']!r} was built differently "
            "by an earlier stage; give the stage another network name",
        )
    networks[stage["network"]] = stage["model"]
    for key in TRAIN_DEFAULTS:
        stage[key] = copy.deepcopy(stage_raw.get(key, data["train"][key]))
    stage_raw = _continued(stage_raw, stage["network"], stages, where)
    stage["continue_optimizer"] = bool(stage_raw.get("continue_optimizer", False))
    stage["select"] = stage_raw.get("select", "best")
    if stage["select"] not in SELECT_CHOICES:
        raise _err(f"{where}.select", f"must be one of {SELECT_CHOICES}, got {stage['select']!r}")
    for part in STAGE_PARTS:
        override = stage_raw.get(part)
        if override is not None and not isinstance(override, dict):
            raise _err(f"{where}.{part}", f"must be a mapping, got {override!r}")
        stage[part] = _merge(data[part], override or {})
    return stage


def _continued(stage_raw: dict, network: str, earlier: list[dict], where: str) -> dict:
    """Resolve ``optimizer: continue`` in a raw stage.

    The stage takes the optimiser and schedule sections of the network's previous stage
    and keeps their state (``continue_optimizer: true`` in the resolved recipe).
    """
    if stage_raw.get("optimizer") != CONTINUE and not stage_raw.get("continue_optimizer"):
        return stage_raw
    previous = [s for s in earlier if s.get("network") == network]
    if not previous:
        raise _err(
            f"{where}.optimizer",
            f"'continue' needs an earlier stage that trains network {network!r}",
        )
    if stage_raw.get("optimizer") == CONTINUE and "schedule" in stage_raw:
        raise _err(f"{where}.schedule", "a stage that continues the optimiser keeps its schedule")
    resolved = dict(stage_raw)
    resolved["optimizer"] = copy.deepcopy(previous[-1]["optimizer"])
    resolved["schedule"] = copy.deepcopy(previous[-1]["schedule"])
    resolved["continue_optimizer"] = True
    return resolved


def _prediction_graph(raw: Any, stages: list[dict]) -> Any:
    """``predict.graph``, validated; by default the last stage's network."""
    from lesionseg.inference.graph import check_graph

    if raw is None:
        return final_network(stages)
    return check_graph(raw, {s["network"] for s in stages if is_train(s)})


#: What a prediction variant may replace.
VARIANT_KEYS = ("graph", "postprocess")


def _prediction_variants(raw: Any, stages: list[dict]) -> dict[str, dict]:
    """``predict.variants``: named alternatives to the graph and post-processing.

    ``lesionseg predict --variant NAME`` uses one (the MSSEG cascade's later gating rule
    beside the paper's product), with the same trained networks.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err("predict.variants", "must map names to {graph, postprocess}")
    variants = {}
    for name, variant in raw.items():
        where = f"predict.variants.{name}"
        _safe_name(name, where)
        if not isinstance(variant, dict) or not variant:
            raise _err(where, "must be a mapping with graph and/or postprocess")
        bad = [k for k in variant if k not in VARIANT_KEYS]
        if bad:
            raise _err(f"{where}.{bad[0]}", f"unknown key (known: {', '.join(VARIANT_KEYS)})")
        checked = {}
        if "graph" in variant:
            from lesionseg.inference.graph import check_graph

            trained = {s["network"] for s in stages if is_train(s)}
            checked["graph"] = check_graph(variant["graph"], trained, f"{where}.graph")
        if "postprocess" in variant:
            try:
                _check_postprocess(variant["postprocess"])
            except LesionsegError as err:
                raise LesionsegError(str(err).replace("predict.", f"{where}.", 1)) from None
            checked["postprocess"] = copy.deepcopy(variant["postprocess"])
        variants[str(name)] = checked
    return variants


def is_train(stage: dict) -> bool:
    """True for a train stage, False for a predict stage."""
    return stage.get("kind", "train") == "train"


def final_network(stages: list[dict]) -> str:
    """The network of the last train stage: the one at the model folder's root."""
    return [s for s in stages if is_train(s)][-1]["network"]


def _predict_stage(raw: dict, index: int, earlier: list[dict]) -> dict:
    """A predict stage, validated: its graph may use only networks trained before it."""
    from lesionseg.inference.graph import check_graph

    where = f"stages[{index}]"
    bad = [k for k in raw if k not in PREDICT_STAGE_KEYS]
    if bad:
        known = ", ".join(PREDICT_STAGE_KEYS)
        raise _err(f"{where}.{bad[0]}", f"unknown key of a predict stage (known: {known})")
    trained = {s["network"] for s in earlier if is_train(s)}
    if not trained:
        raise _err(where, "a predict stage needs a network trained by an earlier stage")
    graph = check_graph(raw.get("predict"), trained, f"{where}.predict")
    subjects = raw.get("subjects", "train")
    if subjects not in ("train", "all"):
        raise _err(f"{where}.subjects", f"must be 'train' or 'all', got {subjects!r}")
    name = _safe_name(raw.get("name", f"stage{index + 1}"), where)
    return {"name": name, "kind": "predict", "predict": graph, "subjects": subjects}


def _check_model_builds(spec: dict, where: str) -> None:
    """Build the network once (1 channel, 2 classes) so bad options fail before any data work."""
    from lesionseg.models.builder import ModelSpec, build_model

    try:
        channels = int(spec["options"].get("in_channels", 1))
        build_model(ModelSpec(spec["name"], spec["options"]), channels, 2)
    except LesionsegError as err:
        raise _err(where, str(err)) from None


def _check_postprocess(raw: Any) -> None:
    """Each ``predict.postprocess`` step must be registered and given the options it takes."""
    from lesionseg.postprocess import POSTPROCESS
    from lesionseg.postprocess.chain import parse_steps

    if not isinstance(raw, list):
        raise _err("predict.postprocess", "must be a list of steps")
    try:
        steps = parse_steps(raw)
    except LesionsegError as err:
        raise LesionsegError(f"recipe {err}") from None
    for i, (name, options) in enumerate(steps):
        where = f"predict.postprocess[{i}]"
        try:
            step = POSTPROCESS.get(name)
        except LesionsegError as err:
            raise _err(where, str(err)) from None
        _check_step_options(name, step, options, where)


def _check_step_options(name: str, step: Callable, options: dict, where: str) -> None:
    """Like :func:`_check_options`, for a step: reserved, unknown and missing options.

    A step's options are its keyword parameters, plus, for one that passes ``**options``
    on, the names its ``forwarded_options()`` gives (the CRF's parameters).
    """
    engine = ENGINE_ARGS["postprocess"]
    reserved = [k for k in options if k in engine]
    if reserved:
        raise _err(f"{where}.{reserved[0]}", "is set by lesionseg itself; remove it")
    signature = list(inspect.signature(step).parameters.values())[1:]  # after the probabilities
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature)
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    params = [p for p in signature if p.kind not in variadic and p.name not in engine]
    forwarded = getattr(step, "forwarded_options", None)
    if forwarded is not None or not takes_any:
        known = {p.name for p in params} | set(forwarded() if forwarded is not None else ())
        unknown = [k for k in options if k not in known]
        if unknown:
            raise _err(
                f"{where}.{unknown[0]}",
                f"unknown option of post-processing step {name!r} "
                f"(known: {', '.join(sorted(known)) or 'none'})",
            )
    missing = [p.name for p in params if p.default is p.empty and p.name not in options]
    if missing:
        raise _err(f"{where}.{missing[0]}", f"is required by post-processing step {name!r}")


def _validate_stage(stage: dict, where: str, registries: dict) -> None:
    for key in ("epochs", "batch_size", "batches_per_epoch"):
        _positive_int(stage[key], f"{where}.{key}")
    for key in ("l1", "l2"):
        _non_negative(stage[key], f"{where}.{key}")
    if (
        isinstance(stage["workers"], bool)
        or not isinstance(stage["workers"], int)
        or stage["workers"] < 0
    ):
        raise _err(f"{where}.workers", f"must be an integer ≥ 0, got {stage['workers']!r}")
    stop = stage["early_stopping"]
    if stop is not None:
        if not isinstance(stop, dict) or "patience" not in stop:
            raise _err(f"{where}.early_stopping", "must be null or {patience: N, min_delta: d}")
        _positive_int(stop["patience"], f"{where}.early_stopping.patience")
    model = stage["model"]
    _check_options(
        "model", registries["model"].get(model["name"]), model["options"], f"{where}.model"
    )
    for part in STAGE_PARTS:
        spec = stage[part]
        factory = registries[part].get(spec["name"])
        options = {k: v for k, v in spec.items() if k != "name"}
        _check_options(part, factory, options, f"{where}.{part}")
    lr = stage["optimizer"].get("lr")
    if lr is not None:
        _non_negative(lr, f"{where}.optimizer.lr")
    augment = stage["sampler"].get("augment") or []
    from lesionseg.augment import AUGMENTATIONS

    if not isinstance(augment, list):
        raise _err(f"{where}.sampler.augment", "must be a list of {name: ..., ...}")
    for j, spec in enumerate(augment):
        if not isinstance(spec, dict) or "name" not in spec:
            raise _err(f"{where}.sampler.augment[{j}]", "must be a mapping with a 'name'")
        AUGMENTATIONS.get(spec["name"])


def find_recipe(name_or_path: str | Path) -> Path:
    """The file of a recipe given as a path or as the name of a packaged recipe.

    Raises:
        LesionsegError: Neither a file nor a packaged recipe (lists the packaged ones).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / f"{name_or_path}.yaml", CONFIG_DIR / f"{name_or_path}.yml"):
        if candidate.is_file():
            return candidate
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        raise LesionsegError("recipe file not found", path)
    packaged = ", ".join(available_recipes())
    raise LesionsegError(
        f"no recipe file or packaged recipe called {str(name_or_path)!r} (packaged: {packaged})"
    )


def available_recipes() -> list[str]:
    """Names of the recipes shipped with lesionseg."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read, resolve and validate a recipe.

    Args:
        name_or_path: A YAML file, or the name of a packaged recipe (``deepmedic-tiny``).
        overrides: Dotted keys to set before validation (``{"train.epochs": 2}``).

    Raises:
        LesionsegError: Unreadable YAML or an invalid recipe, naming the key.
    """
    path = find_recipe(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LesionsegError(f"invalid YAML ({' '.join(str(err).split())})", path) from None
    try:
        recipe = resolve(raw or {}, path)
        if overrides:
            recipe = recipe.with_overrides(overrides)
    except LesionsegError as err:
        if err.path is None:
            raise LesionsegError(str(err), path) from None
        raise
    return recipe


def recipe_from_dict(data: dict[str, Any], source: Path | None = None) -> Recipe:
    """Re-validate a resolved recipe (e.g. from a model's config.json); resolving is idempotent.

    Args:
        data: The recipe.
        source: The file it was read from, named in errors.
    """
    try:
        return resolve(copy.deepcopy(data), source)
    except LesionsegError as err:
        if source is None or err.path is not None:
            raise
        raise LesionsegError(str(err), source) from None
