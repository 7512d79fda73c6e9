"""The one model-spec shape and the one builder, shared by recipes, training and loading.

A model spec is ``{name, options}``; recipes may also write the options flat
(``{name: deepmedic, widths: [...]}``) and ``config.json`` stores them flat, and
:meth:`ModelSpec.parse` reads every form. :func:`build_model` is the only place a network
is made from a spec: the trainer (seeded), the model loader and recipe validation all call it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.models.protocol import SegmentationModel


@dataclass(frozen=True)
class ModelSpec:
    """A registered model's name and options.

    Attributes:
        name: Registry name (``deepmedic``, ``dunet``, ...).
        options: Keyword options of its factory (``in_channels`` and ``num_classes`` come
            from the data unless given).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, where: str = "model") -> ModelSpec:
        """Read ``"name"``, ``{name, options: {...}}`` or ``{name, **options}``.

        Raises:
            LesionsegError: Not one of these forms (naming ``where``).
        """
        if isinstance(raw, str):
            return cls(raw)
        if not isinstance(raw, dict) or "name" not in raw:
            raise LesionsegError(f"{where}: must be a mapping with a 'name' (e.g. deepmedic)")
        options = {k: v for k, v in raw.items() if k != "name"}
        if "options" in options:
            if len(options) > 1:
                extra = sorted(set(options) - {"options"})
                raise LesionsegError(
                    f"{where}: give options either flat or under 'options', not both ({extra})"
                )
            options = dict(options["options"] or {})
        return cls(str(raw["name"]), options)

    def flat(self) -> dict[str, Any]:
        """``{name, **options}``: the form config.json stores."""
        return {"name": self.name, **self.options}


def build_model(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    seed: int | None = None,
    slice_axis: int = 2,
) -> nn.Module:
    """Build a network from its spec (seeded initialisation when ``seed`` is given).

    ``num_classes`` in the options wins over the argument (a one-map sigmoid model);
    ``in_channels`` in the options must agree with the data. ``slice_axis`` goes into the
    geometry of a 2D model: the axis its training slices run along, and so its predictions.

    Raises:
        LesionsegError: Unknown model, bad option, channel count that does not fit, or a
            model that does not follow the contract (no ``geometry``).
    """
    from lesionseg.models import MODELS

    options = dict(spec.options)
    if options.get("in_channels", in_channels) != in_channels:
        raise LesionsegError(
            f"model.in_channels is {options['in_channels']} but the data set has "
            f"{in_channels} channel(s)"
        )
    options["in_channels"] = in_channels
    options.setdefault("num_classes", num_classes)
    with torch.random.fork_rng(devices=[]):  # init happens on the CPU: no CUDA state
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = MODELS.build(spec.name, **options)
        except (TypeError, ValueError) as err:
            raise LesionsegError(f"model {spec.name!r}: {err}") from None
    if not isinstance(model, SegmentationModel):
        raise LesionsegError(f"model {spec.name!r} has no geometry attribute")
    if model.geometry.spatial_dims == 2:
        model.geometry = dataclasses.replace(model.geometry, slice_axis=int(slice_axis))
    return model
