"""Output files of an evaluation: per-case CSV, summary tables, box plot, paired tests.

All files are written atomically; an existing file is replaced only with
``overwrite=True`` (checked for every file before anything is written).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lesionseg.data.atomic import write_json_atomic, write_text_atomic
from lesionseg.errors import LesionsegError
from lesionseg.evaluation.api import EvaluationResult, missing_lines
from lesionseg.evaluation.plots import metric_boxplot
from lesionseg.evaluation.statistics import PAPER_NAMES, PairedTest, metric_columns

CASES_CSV = "cases.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SETTINGS_JSON = "evaluation.json"
BOXPLOT_PNG = "dice_boxplot.png"


def rows_to_csv(rows: Sequence[dict]) -> str:
    """CSV text of rows with the union of their keys as columns (NaN written as ``nan``)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value):
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def _label(metric: str) -> str:
    return f"{metric} ({PAPER_NAMES[metric]})" if metric in PAPER_NAMES else metric


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return lines


def summary_markdown(
    result: EvaluationResult,
    comparisons: Sequence[tuple[str, PairedTest]] = (),
    digits: int = 3,
) -> str:
    """The summary as Markdown: mean (SD) per metric, method and region, as the papers print it."""
    s = result.settings
    lines = ["# Evaluation summary", ""]
    lines.append(f"- reference: {s.get('reference')}; cases: {s.get('cases')}")
    lines += [f"- {line}" for line in missing_lines(s)] or ["- missing predictions: 0"]
    lines += [f"- warning: {line}" for line in s.get("label_warnings", [])]
    if s.get("hd95_definition"):
        lines.append(f"- HD95 = `hd95_{s['hd95']}_mm`: {s['hd95_definition']}")
    lines.append(
        "- values: mean (SD) over cases; [n=k/N] when a metric is undefined for "
        "some cases (left out of the mean)"
    )
    metrics = metric_columns(result.rows)
    metrics = [m for m in metrics if m != "ref_mean_lesion_vox"]
    global_dice = {(g["method"], g["region"]): g["global_dice"] for g in result.global_dice()}
    summary = {(r["method"], r["region"], r["metric"]): r["text"] for r in result.summary()}
    regions = list(dict.fromkeys(r["region"] for r in result.rows))
    for region in regions:
        lines += ["", f"## {region}", ""]
        body = [
            [_label(m)] + [summary.get((meth, region, m), "") for meth in result.methods]
            for m in metrics
        ]
        body.append(
            ["global Dice (all voxels pooled)"]
            + [
                f"{global_dice[(m, region)]:.{digits}f}" if (m, region) in global_dice else ""
                for m in result.methods
            ]
        )
        lines += _table(["metric", *result.methods], body)
    if any("size_group" in r for r in result.rows):
        lines += ["", "## Small- and large-lesion subjects (EDD paper split)", ""]
        thresholds = s.get("size_group_thresholds_vox") or {}
        grouped = result.summary(keys=("method", "region", "size_group"))
        table = {
            (r["method"], r["region"], r["size_group"], r["metric"]): r["text"] for r in grouped
        }
        for region in regions:
            t = thresholds.get(region, math.nan)
            lines += ["", f"### {region} (threshold {t:.2f} voxels mean lesion size)", ""]
            groups = [
                g
                for g in ("small", "large", "none")
                if any((m, region, g, "dice") in table for m in result.methods)
            ]
            header = ["metric"] + [f"{m} / {g}" for m in result.methods for g in groups]
            body = [
                [_label(metric)]
                + [table.get((m, region, g, metric), "") for m in result.methods for g in groups]
                for metric in metrics
            ]
            lines += _table(header, body)
    if comparisons:
        lines += ["", "## Paired tests (two-sided)", ""]
        body = []
        for region, t in comparisons:
            body.append(
                [
                    region,
                    t.metric,
                    f"{t.method_a} vs {t.method_b}",
                    t.n,
                    f"{t.mean_a:.{digits}f}",
                    f"{t.mean_b:.{digits}f}",
                    _p(t.t_pvalue),
                    _p(t.wilcoxon_pvalue),
                ]
            )
        lines += _table(
            [
                "region",
                "metric",
                "methods",
                "pairs",
                "mean A",
                "mean B",
                "paired t p",
                "Wilcoxon p",
            ],
            body,
        )
    if s.get("lesion_presets"):
        lines += ["", "## Lesion-wise presets", ""]
        for p in s["lesion_presets"]:
            lines.append(
                f"- `{p['preset']}`: {p['connectivity']}-connectivity, dilation "
                f"{p['dilation']}, minimum size {p['min_size_mm3']:g} mm³; "
                f"{p['overlap_rule']}; empty cases: {p['empty_rule']} "
                f"(source: {p['source']})"
            )
    lines += ["", "## Empty masks", ""]
    lines += [f"- {k}: {v}" for k, v in s.get("empty_rules", {}).items()]
    return "\n".join(lines) + "\n"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def output_paths(folder: str | Path, plot: bool) -> dict[str, Path]:
    """The files :func:`write_outputs` writes."""
    folder = Path(folder)
    names = {
        "cases": CASES_CSV,
        "summary_csv": SUMMARY_CSV,
        "summary_md": SUMMARY_MD,
        "settings": SETTINGS_JSON,
    }
    if plot:
        names["boxplot"] = BOXPLOT_PNG
    return {k: folder / v for k, v in names.items()}


EVALUATION_KIND = "evaluation"


def check_outputs(folder: str | Path, plot: bool, overwrite: bool) -> None:
    """Fail before any work if an output exists and may not be replaced.

    An existing output is replaced only with ``overwrite`` and only in a folder lesionseg
    made for an evaluation; the folder may hold other files, which are never touched.
    """
    from lesionseg.data.ownership import owner_kind

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LesionsegError("-o names an existing file; give a folder", folder)
    existing = [p for p in output_paths(folder, plot).values() if p.exists()]
    if existing and not overwrite:
        raise LesionsegError(
            f"{existing[0].name} exists already; use --overwrite to replace the outputs",
            existing[0].parent,
        )
    if existing and owner_kind(folder) != EVALUATION_KIND:
        raise LesionsegError(
            f"{existing[0].name} exists, and lesionseg did not make this folder: refusing to "
            "replace it",
            folder,
        )


def write_outputs(
    result: EvaluationResult,
    folder: str | Path,
    comparisons: Sequence[tuple[str, PairedTest]] = (),
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the per-case CSV, the summary (CSV and Markdown), the settings and the box plot.

    The box plot of Dice per method is written when there are several methods.

    Returns:
        Kind of output → path written.
    """
    from lesionseg.data.ownership import prepare_output_folder

    plot = len(result.methods) > 1
    check_outputs(folder, plot, overwrite)
    prepare_output_folder(folder, EVALUATION_KIND, overwrite=overwrite, reusable=True, shared=True)
    paths = output_paths(folder, plot)
    write_text_atomic(paths["cases"], rows_to_csv(result.rows))
    summary = result.summary()
    if any("size_group" in r for r in result.rows):
        summary += result.summary(keys=("method", "region", "size_group"))
    # a mean over fewer cases than the reference has must show in the table itself
    missing = result.settings.get("missing_predictions", {})
    summary = [
        {**row, "missing_predictions": len(missing.get(row["method"], []))} for row in summary
    ]
    write_text_atomic(paths["summary_csv"], rows_to_csv(summary))
    write_text_atomic(paths["summary_md"], summary_markdown(result, comparisons))
    record = {
        **result.settings,
        "methods": result.methods,
        "global_dice": result.global_dice(),
        "paired_tests": [{"region": region, **_finite(asdict(t))} for region, t in comparisons],
    }
    write_json_atomic(paths["settings"], _finite(record))
    if plot:
        metric_boxplot(result.rows, paths["boxplot"], "dice")
    return paths


def _finite(obj):
    """JSON has no NaN: write None instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


__all__ = ["check_outputs", "rows_to_csv", "summary_markdown", "write_outputs"]
