"""The appearance filter's background split against dense kernels and a lattice over all voxels."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.postprocess.crf import appearance
from lesionseg.postprocess.crf.appearance import AppearanceFilter, background_vector


def features(intensities, inv_sigma, shape, sigma):
    """Appearance features of every voxel (positions and intensities in units of σ)."""
    pos = np.indices(shape).reshape(3, -1) / np.asarray(sigma, float)[:, None]
    return np.concatenate([pos, intensities.astype(np.float64) * np.asarray(inv_sigma)[:, None]])


def dense_kernel(f):
    sq = (f**2).sum(0)
    return np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * f.T @ f, 0) / 2)


class ExactOnSubset:
    """Stands in for the lattice over the non-background voxels: the exact kernel times κ."""

    def __init__(self, f, kappa):
        self.matrix = kappa * dense_kernel(f)
        self.n_points = f.shape[1]

    def filter(self, values):
        return (values.astype(np.float64) @ self.matrix.T).astype(np.float32)


def background_case(shape=(9, 10, 8), channels=2, seed=0):
    """A block of "brain" voxels in a background of one intensity vector (value 100).

    Some brain voxels differ from the background by one or two units in one channel (their
    cross terms with the background are large), the others by a lot.
    """
    rng = np.random.default_rng(seed)
    intensities = np.full((channels, *shape), 100, np.uint8)
    brain = np.zeros(shape, bool)
    brain[2:7, 3:8, 1:6] = True
    values = rng.integers(60, 200, size=(channels, int(brain.sum())))
    near = rng.random(values.shape[1]) < 0.3
    values[:, near] = 100
    values[0, near] += rng.integers(1, 3, size=int(near.sum()))
    intensities[:, brain] = values
    return intensities.reshape(channels, -1), brain


def test_background_split_is_exact_apart_from_the_lattice():
    """With the lattice part made exact, the split gives every pair its exact kernel value.

    The volume is smaller than 4σ, so the grid filters are not truncated: the result is κ K v
    up to float32 rounding, cross terms between background and brain included.
    """
    shape, sigma = (9, 10, 8), (3.0, 3.0, 2.5)
    inv_sigma = np.array([1 / 3.0, 1 / 4.0])
    intensities, brain = background_case(shape)
    split = AppearanceFilter(intensities, 1 / inv_sigma, shape, sigma)
    assert split.split and split.n_lattice_points == brain.sum()
    assert split.near.size > 0.2 * brain.sum()  # voxels with sizeable cross terms exist
    f = features(intensities, inv_sigma, shape, sigma)
    inside = np.flatnonzero(brain.reshape(-1))
    split.lattice = ExactOnSubset(f[:, inside], split.kappa)
    values = np.random.default_rng(1).random((2, f.shape[1])).astype(np.float32)
    expected = split.kappa * values.astype(np.float64) @ dense_kernel(f).T
    np.testing.assert_allclose(split.filter(values), expected, rtol=1e-5, atol=1e-5)
    # the cross terms matter here: without them the result would be far off
    no_cross = split.kappa * dense_kernel(f) * (brain.reshape(-1)[:, None] == brain.reshape(-1))
    assert np.abs(values @ no_cross.T - expected).max() > 100 * 1e-5 * np.abs(expected).max()


def test_background_split_agrees_with_lattice_over_all_voxels():
    """The split, a lattice over every voxel and the exact kernel agree as the CRF uses them."""
    shape, sigma = (16, 18, 14), (5.0, 5.0, 5.0)
    rng = np.random.default_rng(3)
    grid = np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2
    brain = ((grid / np.array([6, 7, 5])[:, None, None, None]) ** 2).sum(0) <= 1
    # z-scored channels, background 0: mapped to 127 like the brain's mean intensity
    image = rng.normal(0, 1, (3, *shape)) * brain
    intensities = np.clip((image + 3.1) * 255 / 6.2, 0, 254).astype(np.uint8).reshape(3, -1)
    inv_sigma = np.full(3, 1 / 3.0)
    split = AppearanceFilter(intensities, [3.0] * 3, shape, sigma)
    full = AppearanceFilter(intensities, [3.0] * 3, shape, sigma, background=False)
    assert split.split and not full.split
    assert split.n_lattice_points == brain.sum() < full.n_lattice_points
    k = dense_kernel(features(intensities, inv_sigma, shape, sigma))
    values = rng.random((1, k.shape[0])).astype(np.float32)
    ones = np.ones_like(values)
    exact = (values @ k.T / k.sum(1))[0]
    errors = {}
    for name, filt in (("split", split), ("full", full)):
        approx = (filt.filter(values) / filt.filter(ones))[0]
        errors[name] = np.abs(approx - exact)
    # at background voxels every term is exact (normalisation removes κ); in the brain the
    # lattice's error remains, no larger than with a lattice over every voxel
    inside = brain.reshape(-1)
    assert errors["split"][~inside].max() < 1e-4 < errors["full"][~inside].max()
    assert errors["split"].mean() < 0.01
    assert errors["split"][inside].mean() <= 1.1 * errors["full"][inside].mean()
    assert errors["split"].max() <= errors["full"].max()


@pytest.mark.parametrize("channels, sigma", [(1, (2.0, 2.0, 2.0)), (4, (2.5, 2.0, 3.0))])
def test_kappa_is_the_lattice_scale_within_the_background(channels, sigma):
    """Inside a large background, the split's ``K 1`` is what a lattice over all voxels gives.

    (Near the volume's faces the lattice loses mass, which the exact grid filter does not.)
    """
    shape = (28, 26, 30)
    rng = np.random.default_rng(5)
    intensities = np.full((channels, *shape), 90, np.uint8)
    intensities[:, :6, :6, :6] = rng.integers(0, 255, (channels, 6, 6, 6))
    intensities = intensities.reshape(channels, -1)
    split = AppearanceFilter(intensities, [3.0] * channels, shape, sigma)
    full = AppearanceFilter(intensities, [3.0] * channels, shape, sigma, background=False)
    ones = np.ones((1, intensities.shape[1]), np.float32)
    far = np.zeros(shape, bool)
    far[12:-8, 12:-8, 12:-8] = True  # ≥ 6σ from the brain block, ≥ 2.5σ from the faces
    ratio = (split.filter(ones)[0] / full.filter(ones)[0])[far.reshape(-1)]
    assert np.abs(ratio - 1).max() < 0.02
    assert 0.3 < split.kappa < 0.8  # the lattice loses mass: well below 1


def test_background_vector_and_fallbacks(monkeypatch):
    intensities, brain = background_case()
    mode, is_background = background_vector(intensities)
    assert mode.tolist() == [100, 100]
    np.testing.assert_array_equal(is_background, ~brain.reshape(-1))
    shape = brain.shape
    # no common intensity vector: one lattice over every voxel
    noisy = np.random.default_rng(0).integers(0, 255, intensities.shape).astype(np.uint8)
    filt = AppearanceFilter(noisy, [3.0, 3.0], shape, (2.0, 2.0, 2.0))
    assert not filt.split and filt.n_lattice_points == noisy.shape[1]
    # a background too small to pay off: same
    monkeypatch.setattr(appearance, "MIN_BACKGROUND_FRACTION", 0.99)
    assert not AppearanceFilter(intensities, [3.0, 3.0], shape, (2.0, 2.0, 2.0)).split


@pytest.mark.parametrize("sigma", [(2.0, 2.5, 1.5), (6.0, 6.0, 6.0)])
def test_constant_image_is_a_pure_gaussian(sigma):
    shape = (8, 9, 7)
    n = int(np.prod(shape))
    filt = AppearanceFilter(np.full((2, n), 40, np.uint8), [3.0, 3.0], shape, sigma)
    assert filt.split and filt.lattice is None
    values = np.random.default_rng(0).random((1, n)).astype(np.float32)
    pos = np.indices(shape).reshape(3, -1) / np.asarray(sigma)[:, None]
    radius = np.floor(4 * np.asarray(sigma) + 0.5)[:, None, None]
    diff = np.abs(
        np.indices(shape).reshape(3, -1)[:, :, None] - np.indices(shape).reshape(3, -1)[:, None, :]
    )
    k = dense_kernel(pos) * (diff <= radius).all(0)
    np.testing.assert_allclose(filt.filter(values), filt.kappa * values @ k.T, rtol=1e-5)
