"""The EDD paper's split of subjects into small-lesion and large-lesion groups.

Chen et al. (2017, section 5.5) computed each test subject's mean lesion size,
averaged it over subjects (36.21 pixels) and called subjects whose mean lesion
size is below that average (they rounded it up to 37) "small-lesion" subjects,
the others "large-lesion" subjects. Here the threshold is the average itself
unless one is given; subjects without reference lesions belong to neither group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from lesionseg.evaluation.lesionwise import components

SMALL, LARGE, NO_LESION = "small", "large", "none"


def mean_lesion_size(ref: np.ndarray, connectivity: int = 26) -> float:
    """Mean size in voxels of the connected components of a reference mask (NaN if none)."""
    _, n, sizes = components(np.asarray(ref, dtype=bool), connectivity)
    return float(sizes[1:].mean()) if n else math.nan


def size_threshold(mean_sizes: Mapping[str, float]) -> float:
    """Average over subjects (with lesions) of their mean lesion size."""
    values = [v for v in mean_sizes.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def lesion_size_groups(
    mean_sizes: Mapping[str, float], threshold: float | None = None
) -> tuple[dict[str, str], float]:
    """Assign each subject to the small- or large-lesion group.

    Args:
        mean_sizes: Subject id → mean reference lesion size in voxels (NaN: no lesion).
        threshold: Size separating the groups (default: :func:`size_threshold`).

    Returns:
        Subject id → ``"small"``, ``"large"`` or ``"none"``, and the threshold used.
    """
    if threshold is None:
        threshold = size_threshold(mean_sizes)
    groups = {}
    for subject, size in mean_sizes.items():
        if math.isnan(size):
            groups[subject] = NO_LESION
        else:
            groups[subject] = SMALL if size < threshold else LARGE
    return groups, threshold
