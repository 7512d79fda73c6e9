"""Random masks for the evaluation tests (a plain module: test files import it by name)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def blob_mask(shape, fraction, seed, sigma=1.5):
    """A random mask of smooth blobs covering about ``fraction`` of the volume."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, 1 - fraction)


def lesion_masks(shape, n_lesions, seed):
    """A reference with ``n_lesions`` random balls and a perturbed prediction of it.

    The prediction misses some lesions, shifts others, cuts a few in two and adds
    false positives, so that every lesion-wise rule has work to do.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    ref = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    for _ in range(n_lesions):
        centre = rng.uniform(3, np.array(shape) - 3)
        radius = rng.uniform(0.8, 3.5)
        ball = ((grid.T - centre) ** 2).sum(-1).T <= radius**2
        ref |= ball
        fate = rng.random()
        if fate < 0.2:
            continue  # missed
        shift = rng.integers(-2, 3, size=3) if fate < 0.6 else np.zeros(3, int)
        moved = ((grid.T - centre - shift) ** 2).sum(-1).T <= (radius * rng.uniform(0.6, 1.3)) ** 2
        if fate > 0.85:
            moved[int(centre[0])] = False  # cut in two
        pred |= moved
    for _ in range(max(1, n_lesions // 3)):
        centre = rng.uniform(2, np.array(shape) - 2)
        pred |= ((grid.T - centre) ** 2).sum(-1).T <= rng.uniform(0.5, 2.0) ** 2
    return pred, ref
