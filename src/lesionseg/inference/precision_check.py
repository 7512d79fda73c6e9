"""Does bfloat16 give a model the same labels as float32? Measured once, read by ``auto``.

``lesionseg check-precision MODEL_DIR -d DATASET`` predicts a few cases of a data set (its
test split by default) in float32 and with bfloat16 autocast, and records in the model
folder (``precision.json``) the share of brain voxels whose label agrees and the change of
the Dice with the reference label. ``lesionseg predict --precision auto`` then uses
bfloat16 only for models whose record passed both limits: at least
:data:`MIN_AGREEMENT` of the brain voxels agree and the Dice changes by less than
:data:`MAX_DICE_CHANGE` on every case checked. A model without a record is predicted in
float32 under ``auto``; ``--precision bf16`` always autocasts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lesionseg.errors import LesionsegError

CHECK_NAME = "precision.json"
#: The limits of issue #17's agreement guard.
MIN_AGREEMENT = 0.999
MAX_DICE_CHANGE = 0.002


@dataclass
class PrecisionCheck:
    """The agreement of bfloat16 with float32 labels on a few cases.

    Attributes:
        cases: Per case: ``case``, ``agreement`` (share of brain voxels with the same
            label), ``dice_fp32`` and ``dice_bf16`` (foreground Dice with the reference,
            None without one).
        passed: Every case within :data:`MIN_AGREEMENT` and :data:`MAX_DICE_CHANGE`.
        hardware_bf16: The CPU computes bfloat16 natively (else the check says nothing
            about speed, and ``auto`` would not use it anyway).
    """

    cases: list[dict] = field(default_factory=list)
    passed: bool = False
    hardware_bf16: bool = False

    @property
    def agreement(self) -> float:
        """The lowest agreement over the cases."""
        return min((c["agreement"] for c in self.cases), default=float("nan"))

    @property
    def dice_change(self) -> float:
        """The largest absolute Dice change over the cases with a reference."""
        changes = [
            abs(c["dice_bf16"] - c["dice_fp32"]) for c in self.cases if c["dice_fp32"] is not None
        ]
        return max(changes, default=0.0)

    def to_json(self) -> dict:
        """The record written to ``precision.json``."""
        return {
            "format": 1,
            "precision": "bf16",
            "min_agreement": MIN_AGREEMENT,
            "max_dice_change": MAX_DICE_CHANGE,
            "agreement": round(self.agreement, 6),
            "dice_change": round(self.dice_change, 6),
            **{k: v for k, v in asdict(self).items()},
        }


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    p, r = pred > 0, ref > 0
    total = int(p.sum() + r.sum())
    return 1.0 if total == 0 else 2.0 * int((p & r).sum()) / total


def compare_precisions(method, subjects: Sequence, device: str = "cpu") -> PrecisionCheck:
    """Predict each subject in float32 and bfloat16 and compare the labels.

    Args:
        method: A loaded method (:func:`~lesionseg.inference.method.load_method`).
        subjects: The cases (with label maps for the Dice change).
        device: Prediction device.

    Returns:
        The check (``passed`` set from the limits).
    """
    from lesionseg.inference.precision import cpu_has_bf16
    from lesionseg.inference.predictor import labels_from_probabilities
    from lesionseg.preprocess import PreprocessConfig, preprocess_subject

    check = PrecisionCheck(hardware_bf16=cpu_has_bf16())
    config = PreprocessConfig.from_dict(method.config.get("preprocess"))
    for subject in subjects:
        pre = preprocess_subject(subject, method.channel_names, config)
        labels = {
            amp: labels_from_probabilities(method.predict(pre.image, pre.mask, amp=amp))
            for amp in (False, True)
        }
        brain = pre.mask > 0
        agreement = float((labels[False] == labels[True])[brain].mean()) if brain.any() else 1.0
        row = {"case": subject.id, "agreement": agreement, "dice_fp32": None, "dice_bf16": None}
        if pre.label is not None:
            row["dice_fp32"] = _dice(labels[False], pre.label)
            row["dice_bf16"] = _dice(labels[True], pre.label)
        check.cases.append(row)
    check.passed = bool(check.cases) and (
        check.agreement >= MIN_AGREEMENT and check.dice_change < MAX_DICE_CHANGE
    )
    return check


def write_check(folder: str | Path, check: PrecisionCheck) -> Path:
    """Record a check in a model folder lesionseg made.

    Raises:
        LesionsegError: The folder is not a lesionseg model folder.
    """
    from lesionseg.data.atomic import write_json_atomic
    from lesionseg.data.ownership import owner_kind

    folder = Path(folder)
    if owner_kind(folder) != "model":
        raise LesionsegError("not a model folder lesionseg made; the check is not recorded", folder)
    write_json_atomic(folder / CHECK_NAME, check.to_json())
    return folder / CHECK_NAME


def read_check(folder: str | Path | None) -> dict | None:
    """The recorded check of a model folder, or None (none, or unreadable: not trusted)."""
    if folder is None:
        return None
    path = Path(folder) / CHECK_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def bf16_verified(folder: str | Path | None) -> bool:
    """Whether a model folder records a passing bfloat16 check (what ``auto`` requires)."""
    data = read_check(folder)
    return bool(data and data.get("precision") == "bf16" and data.get("passed") is True)
