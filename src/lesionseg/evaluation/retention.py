"""Uncertainty evaluation by retention curves: the Shifts 2022 MS-lesion measures.

From Malinin et al., "Shifts 2.0: Extending the dataset of real distributional
shifts" (2022), white-matter MS lesion track:

* the normalised Dice score nDSC = 2·TP / (2·TP + k·FP + FN), a Dice whose false
  positives are re-weighted so that it no longer depends on each scan's lesion load;
* the nDSC retention curve: voxels are sorted from the most to the least certain,
  the prediction is kept on the first fraction f of them and the rest are "referred
  to a human", who gets them right (they take the reference's values);
* R-AAC, the area above that curve: 0 for a perfect prediction, and lower when the
  uncertainty puts the errors last.
"""

from __future__ import annotations

import numpy as np

#: Reference lesion-load fraction of the normalised Dice fixed by Shifts 2022.
SHIFTS_R = 0.001
#: Number of retention fractions of the Shifts curve.
SHIFTS_FRACTIONS = 200


def _k(ref_count: int, total: int, r: float) -> float:
    """False-positive weight ((1 − r)/r)·(|G| / (N − |G|)); 1 for an empty reference."""
    if not 0.0 < r < 1.0:
        raise ValueError(f"r must lie strictly between 0 and 1, got {r}")
    if ref_count == 0:
        return 1.0
    if ref_count == total:
        # No voxel can be a false positive, so k never multiplies anything.
        return 0.0
    return (1.0 - r) / r * ref_count / (total - ref_count)


def _ndsc(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, k: float) -> np.ndarray:
    """The nDSC from counts (arrays, one entry per comparison); 1 where both masks are empty."""
    tp = np.asarray(tp, dtype=np.float64)
    den = 2.0 * tp + k * np.asarray(fp, dtype=np.float64) + np.asarray(fn, dtype=np.float64)
    # den = 0 only when there is no TP, FP or FN: both masks are empty.
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, 2.0 * tp / safe, 1.0)


def _prefix(values: np.ndarray) -> np.ndarray:
    """Counts of true values among the first m, for m = 0..len(values)."""
    return np.concatenate([[0], np.cumsum(values, dtype=np.int64)])


def _check_masks(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays, after checking that their shapes agree."""
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(
            f"prediction shape {prediction.shape} differs from reference {reference.shape}"
        )
    return reference, prediction


def default_fractions(n: int = SHIFTS_FRACTIONS) -> np.ndarray:
    """The Shifts retention fractions ``log(1..n) / log(n)``: 0 to 1, denser near 1.

    Log spacing puts most points at high retention, where the curve changes most
    (a lesion occupies a small fraction of the voxels, and so do the errors).

    Args:
        n: Number of fractions (at least 2).

    Returns:
        ``(n,)`` float64 increasing fractions, the first 0 and the last 1.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    return np.log(np.arange(1, n + 1)) / np.log(n)


def ndsc_from_counts(tp: int, fp: int, fn: int, total: int, r: float = SHIFTS_R) -> float:
    """:func:`normalised_dice` from voxel counts (TP, FP, FN and the image's voxel count)."""
    return float(_ndsc(tp, fp, fn, _k(tp + fn, total, r)))


def normalised_dice(reference: np.ndarray, prediction: np.ndarray, r: float = SHIFTS_R) -> float:
    """Normalised Dice score (nDSC) of Shifts 2022.

    nDSC = 2·TP / (2·TP + k·FP + FN) with k = ((1 − r)/r)·(|G| / (N − |G|)), where G is
    the reference and N the number of voxels. ``r`` is a reference lesion-load
    fraction, fixed at 0.001 by Shifts: k rescales the false positives to what they
    would be in a scan whose lesion load |G|/N were r, so that the score does not
    depend on each scan's lesion load (plain Dice rewards scans with much lesion).
    When |G|/N equals r, k = 1 and nDSC is the Dice score.

    Args:
        reference: Reference mask (non-zero is lesion).
        prediction: Predicted mask of the same shape.
        r: Reference lesion-load fraction, in (0, 1).

    Returns:
        nDSC in [0, 1]. k = 1 when the reference is empty (so any prediction scores
        0); 1.0 when both masks are empty. When the reference fills the whole image
        there can be no false positive and nDSC = 2·TP / (2·TP + FN).

    Raises:
        ValueError: Shapes differ, or ``r`` is not in (0, 1).
    """
    reference, prediction = _check_masks(reference, prediction)
    tp = int(np.count_nonzero(reference & prediction))
    ref_count = int(np.count_nonzero(reference))
    fp = int(np.count_nonzero(prediction)) - tp
    return ndsc_from_counts(tp, fp, ref_count - tp, reference.size, r)


def retention_curve(
    reference: np.ndarray,
    prediction: np.ndarray,
    uncertainty: np.ndarray,
    fractions: np.ndarray | None = None,
    r: float = SHIFTS_R,
) -> tuple[np.ndarray, np.ndarray]:
    """The nDSC retention curve: the score when only the most certain voxels keep the prediction.

    Voxels are sorted by ascending uncertainty (a stable sort, so tied voxels keep
    their order in the flattened image). At retention fraction f the first
    ⌊N·f⌋ voxels keep the prediction and the others are replaced by the reference
    (referred to a human, who is right).

    Args:
        reference: Reference mask (non-zero is lesion).
        prediction: Predicted mask of the same shape.
        uncertainty: Voxel-wise uncertainty of the same shape (higher is less certain).
        fractions: Retention fractions in [0, 1]; default :func:`default_fractions`
            (200 log-spaced values from 0 to 1, as in Shifts).
        r: Reference lesion-load fraction of :func:`normalised_dice`.

    Returns:
        ``(fractions, scores)``: float64 arrays of the same length, the nDSC at each
        fraction. At fraction 0 the score is 1; at fraction 1 it is the nDSC of the
        prediction.

    Raises:
        ValueError: Shapes differ, the uncertainty has NaNs, a fraction is outside
            [0, 1], or ``r`` is not in (0, 1).
    """
    reference, prediction = _check_masks(reference, prediction)
    uncertainty = np.asarray(uncertainty)
    if uncertainty.shape != reference.shape:
        raise ValueError(
            f"uncertainty shape {uncertainty.shape} differs from reference {reference.shape}"
        )
    if np.isnan(uncertainty).any():
        raise ValueError("uncertainty has NaN values, which cannot be ranked")
    fractions = default_fractions() if fractions is None else np.asarray(fractions, np.float64)
    if fractions.ndim != 1 or fractions.size == 0:
        raise ValueError("fractions must be a non-empty 1D array")
    if fractions.min() < 0.0 or fractions.max() > 1.0:
        raise ValueError("fractions must lie in [0, 1]")

    order = np.argsort(uncertainty.ravel(), kind="stable")
    ref = reference.ravel()[order]
    pred = prediction.ravel()[order]
    total = ref.size
    ref_count = int(np.count_nonzero(ref))
    k = _k(ref_count, total, r)

    # Counts over the first m sorted voxels for every m = 0..N, so that each fraction
    # costs O(1) instead of a pass over the image.
    tp_kept = _prefix(pred & ref)
    fp_kept = _prefix(pred & ~ref)
    fn_kept = _prefix(~pred & ref)
    ref_kept = _prefix(ref)

    kept = np.clip(np.floor(total * fractions).astype(np.int64), 0, total)
    # Replaced voxels equal the reference: their lesion voxels are all true positives
    # and they add no false positive or negative.
    tp = tp_kept[kept] + (ref_count - ref_kept[kept])
    scores = _ndsc(tp, fp_kept[kept], fn_kept[kept], k)
    return fractions, scores


def retention_auc(fractions: np.ndarray, scores: np.ndarray) -> float:
    """R-AAC: the area above a retention curve, 1 − its trapezoidal area (lower is better).

    It is the area above the curve within the unit square when the fractions run
    from 0 to 1 (as :func:`default_fractions` do), which is how Shifts uses it.

    Args:
        fractions: Non-decreasing retention fractions.
        scores: The score at each fraction.

    Returns:
        1 − ∫ score d(fraction), with the integral by the trapezoidal rule.

    Raises:
        ValueError: Lengths differ, fewer than two points, or fractions decrease.
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError("fractions and scores must be 1D arrays of the same length, at least 2")
    if np.any(np.diff(x) < 0):
        raise ValueError("fractions must be non-decreasing")
    # Written out rather than np.trapz/np.trapezoid, whose name differs across NumPy 1 and 2.
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    return 1.0 - area


def retention_area(
    reference: np.ndarray,
    prediction: np.ndarray,
    uncertainty: np.ndarray,
    fractions: np.ndarray | None = None,
    r: float = SHIFTS_R,
) -> float:
    """The nDSC R-AAC of one case: :func:`retention_auc` of :func:`retention_curve`.

    Args:
        reference: Reference mask (non-zero is lesion).
        prediction: Predicted mask of the same shape.
        uncertainty: Voxel-wise uncertainty of the same shape (higher is less certain).
        fractions: Retention fractions, non-decreasing; default the 200 of Shifts.
        r: Reference lesion-load fraction of :func:`normalised_dice`.

    Returns:
        The area above the nDSC retention curve, in [0, 1]; 0 for a perfect prediction.

    Raises:
        ValueError: As :func:`retention_curve` and :func:`retention_auc`.
    """
    return retention_auc(*retention_curve(reference, prediction, uncertainty, fractions, r))
