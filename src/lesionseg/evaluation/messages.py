"""Wording shared by the evaluation's errors, warnings and summaries."""

from __future__ import annotations

from collections.abc import Sequence


def short_list(items: Sequence[object], limit: int = 5) -> str:
    """``"a, b, c"``, or the first ``limit`` items and ``"and N more"`` for a long list.

    Args:
        items: What to list (case ids, file names), in the order to show.
        limit: How many items to show at most.
    """
    shown = ", ".join(str(i) for i in items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown
