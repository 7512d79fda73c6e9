"""Which training subjects train and which validate: k-fold splits or a held-out share.

Splits are saved as ``splits.json`` in the model folder, so that every fold of a
cross-validation sees the same partition and a resumed run the same cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lesionseg.errors import LesionsegError


def kfold_splits(ids: Sequence[str], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """Partition ``ids`` into ``folds`` folds after a seeded shuffle.

    Returns:
        One ``{"train": [...], "validation": [...]}`` per fold; every id validates once.

    Raises:
        LesionsegError: Fewer subjects than folds, or fewer than 2 folds.
    """
    ids = sorted(ids)
    if folds < 2:
        raise LesionsegError(f"--folds must be at least 2, got {folds}")
    if len(ids) < folds:
        raise LesionsegError(f"{len(ids)} training subjects cannot make {folds} folds")
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    parts = [sorted(shuffled[k::folds]) for k in range(folds)]
    return [
        {"train": sorted(i for j, p in enumerate(parts) if j != k for i in p), "validation": p}
        for k, p in enumerate(parts)
    ]


def holdout_split(
    ids: Sequence[str], cases: int | float | Sequence[str], seed: int
) -> dict[str, list[str]]:
    """Hold out validation cases from ``ids``.

    Args:
        ids: Training subject ids.
        cases: A count (int ≥ 1), a fraction (0 < x < 1), 0 for no validation, or the
            ids to validate on.
        seed: Seed of the shuffle that picks them.

    Raises:
        LesionsegError: Unknown ids, or nothing left to train on.
    """
    ids = sorted(ids)
    if isinstance(cases, list | tuple):
        unknown = sorted(set(cases) - set(ids))
        if unknown:
            raise LesionsegError(f"validation.cases: no training subject {unknown[0]!r}")
        validation = sorted(cases)
    else:
        if 0 < cases < 1:
            count = max(1, int(round(cases * len(ids))))
        else:
            count = int(cases)
        if len(ids) < 2:
            count = 0
        count = min(count, len(ids) - 1)
        order = np.random.default_rng(seed).permutation(len(ids))
        validation = sorted(ids[i] for i in order[:count])
    train = [i for i in ids if i not in set(validation)]
    if not train:
        raise LesionsegError("no training subjects left after holding out validation cases")
    return {"train": train, "validation": validation}
