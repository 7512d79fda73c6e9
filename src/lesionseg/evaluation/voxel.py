"""Voxel-wise overlap metrics: Dice, precision, sensitivity, specificity, volumes.

Definitions (see ``docs/metrics.md`` for sources): with P the predicted mask and
G the reference mask,

* Dice = 2|P∩G| / (|P| + |G|)
* precision = |P∩G| / |P|, sensitivity (recall) = |P∩G| / |G|,
  specificity = |P̄∩Ḡ| / |Ḡ|
* volumes in ml and the absolute volume difference |V(G) − V(P)| (ISLES'22)

Empty masks follow the ISLES'22 and BraTS evaluation code, so no voxel metric is
ever NaN: both masks empty gives Dice, precision and sensitivity 1; a ratio
whose denominator is empty while the other mask is not gives 0 (the BraTS code's
``tp / (tp + fn + eps)``). MONAI returns NaN in these cases instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of one binary comparison.

    Attributes:
        tp: Voxels in both the prediction and the reference.
        pred: Voxels in the prediction.
        ref: Voxels in the reference.
        total: Voxels in the image.
    """

    tp: int
    pred: int
    ref: int
    total: int

    @property
    def fp(self) -> int:
        """Predicted voxels outside the reference."""
        return self.pred - self.tp

    @property
    def fn(self) -> int:
        """Reference voxels the prediction missed."""
        return self.ref - self.tp

    @property
    def tn(self) -> int:
        """Voxels outside both masks."""
        return self.total - self.pred - self.ref + self.tp


def confusion(pred: np.ndarray, ref: np.ndarray) -> Confusion:
    """Count true-positive, predicted and reference voxels of two binary masks.

    Args:
        pred: Predicted mask (any dtype; non-zero is foreground).
        ref: Reference mask of the same shape.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    return Confusion(
        tp=int(np.count_nonzero(pred & ref)),
        pred=int(np.count_nonzero(pred)),
        ref=int(np.count_nonzero(ref)),
        total=int(pred.size),
    )


def _ratio(num: int, den: int, other_empty: bool) -> float:
    """``num / den``, with 1 when both masks are empty and 0 when only ``den`` is."""
    if den == 0:
        return 1.0 if other_empty else 0.0
    return num / den


def dice(c: Confusion) -> float:
    """Dice coefficient; 1.0 when both masks are empty (ISLES'22, BraTS)."""
    den = c.pred + c.ref
    return 1.0 if den == 0 else 2.0 * c.tp / den


def precision(c: Confusion) -> float:
    """|P∩G| / |P|; 1 if both masks are empty, 0 if only the prediction is."""
    return _ratio(c.tp, c.pred, other_empty=c.ref == 0)


def sensitivity(c: Confusion) -> float:
    """|P∩G| / |G|; 1 if both masks are empty, 0 if only the reference is (BraTS)."""
    return _ratio(c.tp, c.ref, other_empty=c.pred == 0)


def specificity(c: Confusion) -> float:
    """|P̄∩Ḡ| / |Ḡ|; 1 if the reference covers the whole image and the prediction too."""
    return _ratio(c.tn, c.total - c.ref, other_empty=c.fp == 0)


def voxel_metrics(pred: np.ndarray, ref: np.ndarray, voxel_volume_ml: float) -> dict[str, float]:
    """All voxel-wise metrics of one binary comparison.

    Args:
        pred: Predicted mask.
        ref: Reference mask of the same shape.
        voxel_volume_ml: Volume of one voxel in millilitres.

    Returns:
        ``dice``, ``ndsc`` (Shifts 2022's normalised Dice), ``precision``,
        ``sensitivity``, ``specificity``, ``pred_ml``,
        ``ref_ml``, ``avd_ml`` (absolute volume difference) and the raw counts
        ``tp_vox``, ``pred_vox``, ``ref_vox`` (kept so that pooled metrics such as
        the global Dice can be computed from a per-case table).
    """
    return metrics_from_confusion(confusion(pred, ref), voxel_volume_ml)


def metrics_from_confusion(c: Confusion, voxel_volume_ml: float) -> dict[str, float]:
    """The metrics of :func:`voxel_metrics` from precomputed counts."""
    from lesionseg.evaluation.retention import ndsc_from_counts

    pred_ml = c.pred * voxel_volume_ml
    ref_ml = c.ref * voxel_volume_ml
    return {
        "dice": dice(c),
        # Shifts 2022's normalised Dice (r = 0.001 of the image's voxels): the Dice a scan
        # of that lesion load would get, so scans with little lesion are not penalised
        "ndsc": ndsc_from_counts(c.tp, c.fp, c.fn, c.total),
        "precision": precision(c),
        "sensitivity": sensitivity(c),
        "specificity": specificity(c),
        "pred_ml": pred_ml,
        "ref_ml": ref_ml,
        "avd_ml": abs(ref_ml - pred_ml),
        "tp_vox": c.tp,
        "pred_vox": c.pred,
        "ref_vox": c.ref,
    }


class GlobalDice:
    """Dice pooled over all voxels of all cases (D-UNet's "DSC(global)").

    Example:
        >>> acc = GlobalDice()
        >>> acc.add(tp=5, pred=6, ref=8)
        >>> acc.add(tp=0, pred=0, ref=2)
        >>> round(acc.value, 4)
        0.625
    """

    def __init__(self) -> None:
        self.tp = 0
        self.pred = 0
        self.ref = 0
        self.cases = 0

    def add(self, tp: int, pred: int, ref: int) -> None:
        """Add one case's counts (true-positive, predicted and reference voxels)."""
        self.tp += int(tp)
        self.pred += int(pred)
        self.ref += int(ref)
        self.cases += 1

    def add_masks(self, pred: np.ndarray, ref: np.ndarray) -> None:
        """Add one case given as masks."""
        c = confusion(pred, ref)
        self.add(c.tp, c.pred, c.ref)

    @property
    def value(self) -> float:
        """2 Σ|P∩G| / Σ(|P| + |G|); 1.0 if every mask was empty."""
        den = self.pred + self.ref
        return 1.0 if den == 0 else 2.0 * self.tp / den
