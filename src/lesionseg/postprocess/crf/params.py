"""Parameters of the 3D fully connected CRF, with the official DeepMedic defaults.

The defaults are those of the official dense 3D CRF application (Kamnitsas et al. 2017):
5 mean-field iterations, a smoothness kernel with σ 3 and weight 3, an appearance kernel
with spatial σ 5, intensity σ 3 per channel and weight 5, intensities of z-scored images
clipped to [-3.1, 3.1] and mapped to [0, 255]. The official code measures spatial σ in
voxels of 1 mm data; lesionseg takes them in millimetres and divides by the voxel spacing,
so the defaults mean the same on 1 mm data and the same physical size elsewhere.

Parameters are saved as JSON or YAML (chosen by the file suffix); a file written by
``lesionseg crf-tune`` keeps them under a ``"crf"`` key next to the tuning record, and
:meth:`CRFParams.load` reads both forms.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from lesionseg.data.atomic import write_text_atomic
from lesionseg.errors import LesionsegError


def _floats(value: Any, name: str, length: int | None = None) -> tuple[float, ...]:
    """A number or a list of numbers as a tuple of floats (a number repeated ``length`` times)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        items = [value] * (length or 1)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
    else:
        raise LesionsegError(f"CRF parameter {name!r} must be a number or a list of numbers")
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise LesionsegError(
            f"CRF parameter {name!r} must contain numbers, got {value!r}"
        ) from None
    if length is not None and len(out) != length:
        raise LesionsegError(f"CRF parameter {name!r} needs {length} values, got {len(out)}")
    return out


@dataclass(frozen=True)
class CRFParams:
    """Settings of the dense CRF (Krähenbühl & Koltun 2011, in 3D as in DeepMedic).

    Attributes:
        iterations: Mean-field iterations.
        smoothness_weight: Weight of the smoothness (position-only) kernel; 0 disables it.
        smoothness_sigma_mm: Its standard deviation per array axis, in mm.
        appearance_weight: Weight of the appearance (position and intensity) kernel;
            0 disables it.
        appearance_sigma_mm: Its spatial standard deviation per array axis, in mm.
        intensity_sigma: Its intensity standard deviation, in units of the [0, 255]
            intensity scale: one value for every channel, or one per channel.
        intensity_range: Image values mapped to 0 and 255 (values outside are clipped);
            ±3.1 suits z-scored images.
        min_probability: Probabilities are clipped to at least this before ``-log``.
    """

    iterations: int = 5
    smoothness_weight: float = 3.0
    smoothness_sigma_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)
    appearance_weight: float = 5.0
    appearance_sigma_mm: tuple[float, float, float] = (5.0, 5.0, 5.0)
    intensity_sigma: tuple[float, ...] = (3.0,)
    intensity_range: tuple[float, float] = (-3.1, 3.1)
    min_probability: float = 1e-6

    def __post_init__(self) -> None:
        # accept numbers and lists from files and callers; store tuples of floats
        set_ = object.__setattr__
        set_(
            self, "smoothness_sigma_mm", _floats(self.smoothness_sigma_mm, "smoothness_sigma_mm", 3)
        )
        set_(
            self, "appearance_sigma_mm", _floats(self.appearance_sigma_mm, "appearance_sigma_mm", 3)
        )
        set_(self, "intensity_sigma", _floats(self.intensity_sigma, "intensity_sigma"))
        set_(self, "intensity_range", _floats(self.intensity_range, "intensity_range", 2))
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int | float):
            raise LesionsegError("CRF parameter 'iterations' must be an integer")
        if self.iterations != int(self.iterations) or self.iterations < 0:
            raise LesionsegError(
                f"CRF 'iterations' must be a whole number ≥ 0, got {self.iterations}"
            )
        set_(self, "iterations", int(self.iterations))
        for name in ("smoothness_weight", "appearance_weight", "min_probability"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LesionsegError(f"CRF parameter {name!r} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise LesionsegError(f"CRF parameter {name!r} must be finite and ≥ 0, got {value}")
            set_(self, name, float(value))
        if not 0 < self.min_probability < 0.5:
            raise LesionsegError(
                f"CRF 'min_probability' must be in (0, 0.5), got {self.min_probability}"
            )
        for name in ("smoothness_sigma_mm", "appearance_sigma_mm", "intensity_sigma"):
            values = getattr(self, name)
            if not values or any(not math.isfinite(v) or v <= 0 for v in values):
                raise LesionsegError(f"CRF {name!r} must be positive numbers, got {list(values)}")
        low, high = self.intensity_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise LesionsegError(
                f"CRF 'intensity_range' must be [low, high] with low < high, got {[low, high]}"
            )

    def intensity_sigmas(self, channels: int) -> tuple[float, ...]:
        """The intensity σ of each of ``channels`` image channels.

        Raises:
            LesionsegError: The parameters give a different number of σ than channels.
        """
        if len(self.intensity_sigma) == 1:
            return self.intensity_sigma * channels
        if len(self.intensity_sigma) != channels:
            raise LesionsegError(
                f"CRF 'intensity_sigma' has {len(self.intensity_sigma)} values but the image "
                f"has {channels} channels"
            )
        return self.intensity_sigma

    def with_changes(self, **changes: Any) -> CRFParams:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable form (lists instead of tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CRFParams:
        """Build from a mapping; missing fields keep their defaults.

        Raises:
            LesionsegError: Unknown or invalid fields.
        """
        if not isinstance(data, Mapping):
            raise LesionsegError(f"CRF parameters must be a mapping, got {type(data).__name__}")
        if "crf" in data and isinstance(data["crf"], Mapping):
            data = data["crf"]  # a crf-tune result: parameters plus the tuning record
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LesionsegError(
                f"unknown CRF parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**dict(data))

    @classmethod
    def load(cls, path: str | Path) -> CRFParams:
        """Read parameters from a JSON or YAML file.

        Raises:
            LesionsegError: Missing, unreadable or invalid file.
        """
        path = Path(path)
        if not path.is_file():
            raise LesionsegError("CRF parameter file not found", path)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
            message = f"cannot read CRF parameters ({type(err).__name__}: {err})"
            raise LesionsegError(message, path) from None
        try:
            return cls.from_dict(data if data is not None else {})
        except LesionsegError as err:
            raise LesionsegError(str(err), path) from None

    def save(
        self, path: str | Path, extra: Mapping[str, Any] | None = None, overwrite: bool = True
    ) -> None:
        """Write the parameters as JSON (``.json``) or YAML (other suffixes), atomically.

        Args:
            path: Output file.
            extra: More top-level entries (then the parameters go under ``"crf"``).
            overwrite: If False, an existing file is an error.
        """
        path = Path(path)
        data: dict[str, Any] = self.to_dict() if not extra else {"crf": self.to_dict(), **extra}
        text = (
            json.dumps(data, indent=2) + "\n"
            if path.suffix == ".json"
            else yaml.safe_dump(data, sort_keys=False)
        )
        write_text_atomic(path, text, overwrite=overwrite)


def resolve_params(params: CRFParams | Mapping[str, Any] | str | Path | None) -> CRFParams:
    """Parameters from an object, a mapping, a file path, or None (the official defaults)."""
    if params is None:
        return CRFParams()
    if isinstance(params, CRFParams):
        return params
    if isinstance(params, Mapping):
        return CRFParams.from_dict(params)
    if isinstance(params, str | Path):
        return CRFParams.load(params)
    raise LesionsegError(
        f"CRF parameters must be a file, a mapping or CRFParams, not {type(params).__name__}"
    )
