"""Data augmentation: random transforms that draw parameters, deterministic ones that apply them.

Recipes list augmentations by name with their options, e.g.
``augment: [{name: flip, axes: [0], p: 0.5}, {name: intensity-shift, std: 0.1}]``
(Brain SegNet: ``[{name: intensity-scale}, {name: rot90}, {name: flip, axes: [0, 1]}]``);
:func:`build_augmentations` turns such a list into a :class:`Compose`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lesionseg.augment.affine2d import Affine2D, RandomAffine2D
from lesionseg.augment.base import Compose, RandomTransform, SpatialTransform, Transform
from lesionseg.augment.flip import Flip, RandomFlip
from lesionseg.augment.intensity_scale import IntensityScale, RandomIntensityScale
from lesionseg.augment.intensity_shift import IntensityShift, RandomIntensityShift
from lesionseg.augment.rot90 import RandomRot90, Rot90
from lesionseg.errors import LesionsegError
from lesionseg.registry import Registry

AUGMENTATIONS: Registry = Registry("augmentation")
AUGMENTATIONS.register("flip")(RandomFlip)
AUGMENTATIONS.register("intensity-shift")(RandomIntensityShift)
AUGMENTATIONS.register("affine2d")(RandomAffine2D)
AUGMENTATIONS.register("intensity-scale")(RandomIntensityScale)
AUGMENTATIONS.register("rot90")(RandomRot90)


def build_augmentations(specs: Sequence[dict[str, Any]] | None, spatial_dims: int = 3) -> Compose:
    """Build the random transforms a recipe lists.

    Args:
        specs: List of ``{name: ..., **options}``.
        spatial_dims: Spatial axes of the examples (passed to transforms that take it).

    Raises:
        LesionsegError: Unknown name or bad option.
    """
    transforms = []
    for i, spec in enumerate(specs or []):
        if not isinstance(spec, dict) or "name" not in spec:
            raise LesionsegError(f"augment[{i}]: expected a mapping with a 'name', got {spec!r}")
        options = {k: v for k, v in spec.items() if k != "name"}
        factory = AUGMENTATIONS.get(spec["name"])
        if "spatial_dims" in getattr(factory.__init__, "__code__", ()).co_varnames:
            options.setdefault("spatial_dims", spatial_dims)
        try:
            transforms.append(factory(**options))
        except (TypeError, ValueError) as err:
            raise LesionsegError(f"augment[{i}] ({spec['name']}): {err}") from None
    return Compose(transforms)


__all__ = [
    "AUGMENTATIONS",
    "Affine2D",
    "Compose",
    "Flip",
    "IntensityScale",
    "IntensityShift",
    "RandomAffine2D",
    "RandomFlip",
    "RandomIntensityScale",
    "RandomIntensityShift",
    "RandomRot90",
    "RandomTransform",
    "Rot90",
    "SpatialTransform",
    "Transform",
    "build_augmentations",
]
