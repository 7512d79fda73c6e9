"""Exact separable Gaussian filtering over the voxel grid, against dense sums over voxel pairs."""

from __future__ import annotations

import numba as nb
import numpy as np
import pytest

from lesionseg.postprocess.crf.gaussian import GridGaussian


def dense_gaussian(shape, sigma, values, truncate=None):
    """``Σ_j exp(-Σ_d (x_id - x_jd)² / 2σ_d²) v_j`` over every pair (optionally cut per axis)."""
    pos = np.indices(shape).reshape(3, -1).astype(np.float64)
    diff = pos[:, :, None] - pos[:, None, :]
    weight = np.exp(-0.5 * ((diff / np.asarray(sigma, float)[:, None, None]) ** 2).sum(0))
    if truncate is not None:
        radius = np.floor(truncate * np.asarray(sigma, float) + 0.5)[:, None, None]
        weight *= (np.abs(diff) <= radius).all(0)
    return values.reshape(-1) @ weight.T


@pytest.mark.parametrize(
    "shape, sigma",
    [((7, 9, 11), (1.0, 1.5, 0.7)), ((12, 5, 8), (2.5, 1.0, 3.0)), ((6, 6, 6), (0.4, 5.0, 1.2))],
)
def test_grid_gaussian_equals_dense_sum(shape, sigma):
    rng = np.random.default_rng(0)
    values = rng.normal(size=shape).astype(np.float32)
    values[:, :2] = 0  # all-zero rows take the shortcut
    values[2, 3] = 0
    out = GridGaussian(shape, sigma).filter_volume(values)
    # the same 4σ truncation: float32 rounding only
    expected = dense_gaussian(shape, sigma, values.astype(np.float64), truncate=4.0)
    np.testing.assert_allclose(out.reshape(-1), expected, atol=2e-5 * np.abs(expected).max())
    # against the untruncated sum: the cut-off weights are below e^-8 of the peak
    full = dense_gaussian(shape, sigma, values.astype(np.float64))
    assert np.abs(out.reshape(-1) - full).max() < 1e-3 * np.abs(values).sum()


def test_grid_gaussian_many_signals_and_normalisers():
    shape, sigma = (8, 7, 9), (1.2, 2.0, 0.9)
    rng = np.random.default_rng(1)
    values = rng.random((2, int(np.prod(shape)))).astype(np.float32)
    g = GridGaussian(shape, sigma)
    out = g.filter(values)
    for v in range(2):
        np.testing.assert_allclose(out[v], g.filter_volume(values[v]).reshape(-1), rtol=1e-6)
    norm, filtered = g.normalisers()
    ones = dense_gaussian(shape, sigma, np.ones(shape), truncate=4.0)
    np.testing.assert_allclose(norm, 1 / np.sqrt(ones), rtol=1e-5)
    expected = dense_gaussian(shape, sigma, norm.astype(np.float64), truncate=4.0)
    np.testing.assert_allclose(filtered, expected, rtol=1e-5)


def test_grid_gaussian_same_with_one_and_two_threads():
    shape, sigma = (30, 26, 21), (2.0, 3.0, 1.5)
    values = np.random.default_rng(2).random(shape).astype(np.float32)
    previous = nb.get_num_threads()
    try:
        nb.set_num_threads(1)
        one = GridGaussian(shape, sigma).filter_volume(values)
        nb.set_num_threads(min(2, nb.config.NUMBA_NUM_THREADS))
        two = GridGaussian(shape, sigma).filter_volume(values)
    finally:
        nb.set_num_threads(previous)
    np.testing.assert_array_equal(one, two)


def test_grid_gaussian_rejects_bad_sigma():
    with pytest.raises(ValueError, match="positive"):
        GridGaussian((4, 4, 4), (1.0, 0.0, 1.0))
