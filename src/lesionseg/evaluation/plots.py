"""Box plots of a per-case metric per method, as PNG (no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from lesionseg.data.atomic import atomic_path


def metric_boxplot(
    rows: Sequence[Mapping],
    path: str | Path,
    metric: str = "dice",
    overwrite: bool = True,
    title: str | None = None,
) -> Path:
    """Write a box plot of ``metric`` per method, one panel per region.

    Args:
        rows: Per-case rows with ``method``, ``region`` and the metric.
        path: Output PNG file (written atomically).
        metric: Column to plot.
        overwrite: If False, an existing file is an error.
        title: Figure title (default: the metric name).

    Returns:
        The path written.
    """
    # the object-oriented API with an Agg canvas never touches pyplot's global backend
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(r["method"] for r in rows))
    regions = list(dict.fromkeys(r["region"] for r in rows))
    fig = Figure(figsize=(max(3.0, 1.2 * len(methods) + 1.5) * len(regions), 4.0), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(regions), squeeze=False)[0]
    for ax, region in zip(axes, regions):
        data = []
        for method in methods:
            values = [
                float(r[metric])
                for r in rows
                if r["region"] == region
                and r["method"] == method
                and not math.isnan(float(r.get(metric, math.nan)))
            ]
            data.append(values)
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=20, ha="right")
        ax.set_title(region)
        ax.set_ylabel(metric)
        if metric in ("dice", "precision", "sensitivity", "specificity"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or f"{metric} per case")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return path
