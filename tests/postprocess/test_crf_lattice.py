"""The permutohedral lattice against a plain implementation of the published algorithm and
against exact Gaussian filtering."""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import pytest

from lesionseg.postprocess.crf.lattice import PermutohedralLattice


def reference_lattice_filter(features: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, int]:
    """Adams et al. (2010) as in Krähenbühl's dense CRF code, written plainly.

    Dictionary of full integer keys, neighbours found by looking their keys up: none of
    the packing, sorting or merging of the implementation under test.
    """
    d, n = features.shape
    dp1 = d + 1
    inv_std = math.sqrt(2 / 3) * dp1
    scale = [inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)]
    table: dict[tuple[int, ...], int] = {}
    offsets, weights = [], []
    for k in range(n):
        el = [0.0] * dp1
        total = 0.0
        for j in range(d, 0, -1):
            cf = features[j - 1, k] * scale[j - 1]
            el[j] = total - j * cf
            total += cf
        el[0] = total
        rem0 = [0] * dp1
        s = 0
        for i in range(dp1):
            v = el[i] / dp1
            up, down = math.ceil(v) * dp1, math.floor(v) * dp1
            rem0[i] = int(up) if up - el[i] < el[i] - down else int(down)
            s += rem0[i] // dp1
        rank = [0] * dp1
        for i in range(d):
            for j in range(i + 1, dp1):
                if el[i] - rem0[i] < el[j] - rem0[j]:
                    rank[i] += 1
                else:
                    rank[j] += 1
        for i in range(dp1):
            rank[i] += s
            if rank[i] < 0:
                rank[i] += dp1
                rem0[i] += dp1
            elif rank[i] > d:
                rank[i] -= dp1
                rem0[i] -= dp1
        bary = [0.0] * (d + 2)
        for i in range(dp1):
            v = (el[i] - rem0[i]) / dp1
            bary[d - rank[i]] += v
            bary[d - rank[i] + 1] -= v
        bary[0] += 1 + bary[d + 1]
        ids = []
        for r in range(dp1):
            key = tuple(rem0[i] + (r if rank[i] <= d - r else r - dp1) for i in range(d))
            ids.append(table.setdefault(key, len(table)))
        offsets.append(ids)
        weights.append(bary[:dp1])
    m = len(table)
    keys = list(table)
    lattice = np.zeros((m + 1, values.shape[0]))  # row m: the "absent neighbour"
    for k in range(n):
        for r in range(dp1):
            lattice[offsets[k][r]] += weights[k][r] * values[:, k]
    for j in range(dp1):
        blurred = lattice.copy()
        for i, key in enumerate(keys):
            n1 = [c - 1 for c in key]
            n2 = [c + 1 for c in key]
            if j < d:
                n1[j], n2[j] = key[j] + d, key[j] - d
            a, b = table.get(tuple(n1), m), table.get(tuple(n2), m)
            blurred[i] = lattice[i] + 0.5 * (lattice[a] + lattice[b])
        lattice = blurred
        lattice[m] = 0
    alpha = 1 / (1 + 2.0**-d)
    out = np.zeros(values.shape)
    for k in range(n):
        for r in range(dp1):
            out[:, k] += weights[k][r] * lattice[offsets[k][r]] * alpha
    return out, m


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7])
def test_lattice_matches_reference_algorithm(d):
    rng = np.random.default_rng(d)
    n = 300
    features = (rng.normal(size=(d, n)) * 2).astype(np.float32)
    values = rng.random((2, n)).astype(np.float32)
    expected, m = reference_lattice_filter(features.astype(np.float64), values)
    lattice = PermutohedralLattice(features)
    assert lattice.n_vertices == m
    np.testing.assert_allclose(
        lattice.filter(values), expected, rtol=2e-5, atol=1e-6 * expected.max()
    )


def test_lattice_many_chunks_and_many_vertices():
    # 20 000 sparse 7-D points: several parallel chunks in the first pass, and about 8
    # vertices per point (nearly every vertex belongs to one point only)
    rng = np.random.default_rng(7)
    features = (rng.normal(size=(7, 20000)) * 3).astype(np.float32)
    values = rng.random((1, 20000)).astype(np.float32)
    lattice = PermutohedralLattice(features)
    assert lattice.n_vertices > 2.4 * features.shape[1]
    expected, m = reference_lattice_filter(features[:, :2000].astype(np.float64), values[:, :2000])
    sub = PermutohedralLattice(features[:, :2000])
    assert sub.n_vertices == m
    np.testing.assert_allclose(sub.filter(values[:, :2000]), expected, rtol=2e-5, atol=1e-7)
    assert lattice.n_vertices <= 8 * features.shape[1]  # linear in the number of points


def test_lattice_two_word_keys():
    # features spread over thousands of σ need keys wider than one 64-bit word
    rng = np.random.default_rng(3)
    features = rng.uniform(0, 4000, size=(7, 200)).astype(np.float32)
    features[:, 100:] = features[:, :100] + rng.normal(0, 0.5, size=(7, 100))  # some neighbours
    values = rng.random((1, 200)).astype(np.float32)
    lattice = PermutohedralLattice(features)
    assert lattice.n_words == 2
    expected, m = reference_lattice_filter(features.astype(np.float64), values)
    assert lattice.n_vertices == m
    np.testing.assert_allclose(lattice.filter(values), expected, rtol=2e-5, atol=1e-7)


def test_grid_features_equal_explicit_positions():
    rng = np.random.default_rng(0)
    shape = (7, 6, 5)
    n = int(np.prod(shape))
    intensities = rng.integers(0, 255, size=(2, n)).astype(np.uint8)
    inv_sigma = np.array([1 / 20.0, 1 / 30.0])
    grid_scale = (0.5, 0.4, 0.25)
    on_grid = PermutohedralLattice(intensities, inv_sigma, shape, grid_scale)
    x, y, z = np.indices(shape).reshape(3, n).astype(np.float64)
    # the lattice orders features as dense channels, then z, y, x
    explicit = np.concatenate(
        [
            intensities * inv_sigma[:, None],
            [z * grid_scale[2], y * grid_scale[1], x * grid_scale[0]],
        ]
    )
    plain = PermutohedralLattice(explicit)
    values = rng.random((2, n)).astype(np.float32)
    np.testing.assert_allclose(on_grid.filter(values), plain.filter(values), rtol=1e-4, atol=1e-5)


def test_grid_subset_equals_explicit_positions():
    # a lattice over some voxels of a grid (grid_index) is the lattice of their features
    rng = np.random.default_rng(1)
    shape = (9, 8, 7)
    index = np.flatnonzero(rng.random(int(np.prod(shape))) < 0.4)
    intensities = rng.integers(0, 255, size=(3, index.size)).astype(np.uint8)
    inv_sigma = np.array([1 / 10.0, 1 / 25.0, 1 / 4.0])
    grid_scale = (0.4, 0.5, 0.3)
    subset = PermutohedralLattice(intensities, inv_sigma, shape, grid_scale, grid_index=index)
    x, y, z = np.unravel_index(index, shape)
    explicit = np.concatenate(
        [
            intensities * inv_sigma[:, None],
            [z * grid_scale[2], y * grid_scale[1], x * grid_scale[0]],
        ]
    )
    plain = PermutohedralLattice(explicit.astype(np.float32))
    assert subset.n_points == index.size and subset.n_vertices == plain.n_vertices
    values = rng.random((2, index.size)).astype(np.float32)
    np.testing.assert_allclose(subset.filter(values), plain.filter(values), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="outside the grid"):
        PermutohedralLattice(intensities, inv_sigma, shape, grid_scale, grid_index=index + 10**4)
    with pytest.raises(ValueError, match="grid_index has"):
        PermutohedralLattice(intensities, inv_sigma, shape, grid_scale, grid_index=index[1:])


def test_lattice_same_with_one_and_two_threads():
    # the parallel splat, blur and slice must not race: the same result on two threads
    rng = np.random.default_rng(4)
    shape = (40, 36, 30)
    n = int(np.prod(shape))
    intensities = rng.integers(0, 40, size=(4, n)).astype(np.uint8)
    values = rng.random((1, n)).astype(np.float32)
    previous = nb.get_num_threads()
    results = []
    try:
        for threads in (1, min(2, nb.config.NUMBA_NUM_THREADS)):
            nb.set_num_threads(threads)
            lattice = PermutohedralLattice(intensities, np.full(4, 1 / 3), shape, (0.3, 0.3, 0.3))
            results.append((lattice.n_vertices, lattice.filter(values)))
    finally:
        nb.set_num_threads(previous)
    assert results[0][0] == results[1][0]
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)


def _exact_gaussian(features: np.ndarray, values: np.ndarray) -> np.ndarray:
    sq = (features**2).sum(0)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * features.T @ features, 0)
    return values @ np.exp(-dist / 2).T


@pytest.mark.parametrize(
    "name, make",
    [
        ("2-D grid", lambda rng: np.indices((30, 30)).reshape(2, -1) / 3.0),
        ("3-D grid", lambda rng: np.indices((12, 12, 12)).reshape(3, -1) / 2.5),
        (
            "grid + intensity",
            lambda rng: np.concatenate(
                [
                    np.indices((12, 12, 12)).reshape(3, -1) / 5.0,
                    (np.indices((12, 12, 12))[0].reshape(1, -1) > 5) * 20
                    + rng.normal(0, 1, (1, 1728)),
                ]
            ),
        ),
    ],
)
def test_lattice_approximates_exact_gaussian(name, make):
    """The normalised filter (a weighted mean, as the CRF uses it) is within 2% of exact."""
    rng = np.random.default_rng(0)
    features = make(rng)
    n = features.shape[1]
    values = rng.random((1, n))
    lattice = PermutohedralLattice(features.astype(np.float32))
    approx = (
        lattice.filter(values.astype(np.float32))[0]
        / lattice.filter(np.ones((1, n), np.float32))[0]
    )
    exact = _exact_gaussian(features, values)[0] / _exact_gaussian(features, np.ones((1, n)))[0]
    error = np.abs(approx - exact)
    assert error.mean() < 0.01, name
    assert error.max() < 0.05, name
    # a smoothing that is not close to the exact one would not correlate this well
    assert np.corrcoef(approx - values[0], exact - values[0])[0, 1] > 0.98, name


def test_lattice_rejects_bad_input():
    with pytest.raises(ValueError):
        PermutohedralLattice(None)
    with pytest.raises(ValueError):
        PermutohedralLattice(
            np.zeros((2, 10), np.float32), grid_shape=(2, 2, 2), grid_scale=(1, 1, 1)
        )
    lattice = PermutohedralLattice(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError):
        lattice.filter(np.zeros((1, 11), np.float32))
