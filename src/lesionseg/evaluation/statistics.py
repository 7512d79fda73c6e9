"""Summaries as the papers print them, and paired tests between two methods.

Every mean is NaN-aware and reports how many cases it used: a metric that is
undefined for a case (for example a distance when exactly one mask is empty)
is left out of the mean and the count shows it, never silently.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# columns that are raw counts kept for pooled metrics, not summarised per case
RAW_COUNT_COLUMNS = frozenset({"tp_vox", "pred_vox", "ref_vox"})
KEY_COLUMNS = ("method", "case", "region", "size_group")

# names the papers use for some columns, shown beside the column name
PAPER_NAMES = {
    "dice": "DSC",
    "avd_ml": "AVD",
    "edd_fp": "m#FP",
    "edd_fn": "m#FN",
    "edd_fp_mean_vox": "mSFP (voxels)",
    "edd_fn_mean_vox": "mSFN (voxels)",
    "edd_detected": "DR",
}


@dataclass(frozen=True)
class MetricSummary:
    """Mean (SD) of one metric over cases.

    Attributes:
        mean: Mean over the cases where the metric is defined.
        sd: Sample standard deviation (ddof = 1); NaN with fewer than two values.
        median: Median of the defined values.
        n: Number of cases with a defined (non-NaN) value.
        n_total: Number of cases.
    """

    mean: float
    sd: float
    median: float
    n: int
    n_total: int

    def format(self, digits: int = 3) -> str:
        """``"0.812 (0.104)"``, with ``" [n=9/10]"`` when some cases were left out."""
        if self.n == 0:
            text = "n/a"
        else:
            sd = "–" if math.isnan(self.sd) else f"{self.sd:.{digits}f}"
            text = f"{self.mean:.{digits}f} ({sd})"
        if self.n < self.n_total:
            text += f" [n={self.n}/{self.n_total}]"
        return text


def summarize(values: Iterable[float]) -> MetricSummary:
    """NaN-aware mean, SD and median of one metric over cases."""
    array = np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)
    finite = array[~np.isnan(array)]
    n = int(finite.size)
    if n == 0:
        return MetricSummary(math.nan, math.nan, math.nan, 0, int(array.size))
    sd = float(np.std(finite, ddof=1)) if n > 1 else math.nan
    return MetricSummary(float(finite.mean()), sd, float(np.median(finite)), n, int(array.size))


def metric_columns(rows: Sequence[Mapping]) -> list[str]:
    """Numeric metric columns of a per-case table, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key in KEY_COLUMNS or key in RAW_COUNT_COLUMNS or key in columns:
                continue
            if isinstance(value, int | float | np.integer | np.floating):
                columns.append(key)
    return columns


def group_rows(rows: Sequence[Mapping], keys: Sequence[str]) -> dict[tuple, list[Mapping]]:
    """Rows grouped by the values of ``keys`` (in first-seen order)."""
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return groups


def summary_rows(
    rows: Sequence[Mapping],
    keys: Sequence[str] = ("method", "region"),
    metrics: Sequence[str] | None = None,
) -> list[dict]:
    """One row per group and metric: mean, SD, median, n, n_total.

    Args:
        rows: Per-case rows (dicts) as produced by :func:`lesionseg.evaluation.api.evaluate`.
        keys: Columns that define a group.
        metrics: Metric columns to summarise (default: every numeric column).
    """
    metrics = list(metrics) if metrics is not None else metric_columns(rows)
    out = []
    for group, members in group_rows(rows, keys).items():
        for metric in metrics:
            s = summarize(r.get(metric, math.nan) for r in members)
            out.append(
                {
                    **dict(zip(keys, group)),
                    "metric": metric,
                    "mean": s.mean,
                    "sd": s.sd,
                    "median": s.median,
                    "n": s.n,
                    "n_total": s.n_total,
                    "text": s.format(),
                }
            )
    return out


def global_dice_rows(
    rows: Sequence[Mapping], keys: Sequence[str] = ("method", "region")
) -> list[dict]:
    """Dice pooled over all voxels of all cases of each group (D-UNet's DSC(global))."""
    out = []
    for group, members in group_rows(rows, keys).items():
        tp = sum(int(r["tp_vox"]) for r in members)
        den = sum(int(r["pred_vox"]) + int(r["ref_vox"]) for r in members)
        out.append(
            {
                **dict(zip(keys, group)),
                "global_dice": 1.0 if den == 0 else 2 * tp / den,
                "cases": len(members),
            }
        )
    return out


@dataclass(frozen=True)
class PairedTest:
    """Two-sided paired tests of one metric between two methods on the same cases.

    Attributes:
        metric: The metric compared.
        method_a: First method.
        method_b: Second method.
        n: Number of pairs used (cases where both values are defined).
        dropped: Cases left out because a value was undefined (NaN) or missing.
        mean_a: Mean of method A over the pairs.
        mean_b: Mean of method B over the pairs.
        mean_difference: Mean of A − B.
        t_statistic: Paired t statistic (scipy.stats.ttest_rel).
        t_pvalue: Its two-sided p-value.
        wilcoxon_statistic: Wilcoxon signed-rank statistic (scipy.stats.wilcoxon).
        wilcoxon_pvalue: Its two-sided p-value (NaN when every difference is zero).
    """

    metric: str
    method_a: str
    method_b: str
    n: int
    dropped: int
    mean_a: float
    mean_b: float
    mean_difference: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float


def paired_test(
    values_a: Mapping[str, float],
    values_b: Mapping[str, float],
    metric: str = "dice",
    method_a: str = "A",
    method_b: str = "B",
) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test on the cases both methods have.

    Args:
        values_a: Case id → value for method A.
        values_b: Case id → value for method B.
        metric: Name of the metric, for the record.
        method_a: Name of method A.
        method_b: Name of method B.
    """
    cases = sorted(set(values_a) | set(values_b))
    pairs = []
    for case in cases:
        a, b = values_a.get(case), values_b.get(case)
        if a is None or b is None or math.isnan(float(a)) or math.isnan(float(b)):
            continue
        pairs.append((float(a), float(b)))
    n = len(pairs)
    dropped = len(cases) - n
    nan = math.nan
    if n == 0:
        return PairedTest(metric, method_a, method_b, 0, dropped, nan, nan, nan, nan, nan, nan, nan)
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    diff = a - b
    t_stat = t_p = w_stat = w_p = nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if n >= 2:
            t = stats.ttest_rel(a, b)
            t_stat, t_p = float(t.statistic), float(t.pvalue)
        if np.any(diff != 0):
            w = stats.wilcoxon(a, b)
            w_stat, w_p = float(w.statistic), float(w.pvalue)
    return PairedTest(
        metric,
        method_a,
        method_b,
        n,
        dropped,
        float(a.mean()),
        float(b.mean()),
        float(diff.mean()),
        t_stat,
        t_p,
        w_stat,
        w_p,
    )


def paired_test_rows(
    rows: Sequence[Mapping], method_a: str, method_b: str, metric: str = "dice"
) -> list[tuple[str, PairedTest]]:
    """:func:`paired_test` for every region of a per-case table."""
    out = []
    by_region = group_rows(rows, ("region",))
    for (region,), members in by_region.items():
        values = {
            m: {r["case"]: r.get(metric, math.nan) for r in members if r["method"] == m}
            for m in (method_a, method_b)
        }
        out.append(
            (region, paired_test(values[method_a], values[method_b], metric, method_a, method_b))
        )
    return out
