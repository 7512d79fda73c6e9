"""Smooth random fields defined in millimetres, sampled on any voxel grid.

Deformations and bias fields are drawn on a coarse lattice of control points fixed
in world space (so that a seed gives the same field at every output spacing) and
interpolated separably: one small matrix product per axis instead of a 3D spline
evaluation. For a 161×197×163 grid this takes about 0.05 s per component, against
0.3 s for ``scipy.ndimage.zoom`` with ``order=1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def interpolation_matrix(positions: np.ndarray, n: int) -> np.ndarray:
    """Linear-interpolation weights of ``n`` lattice nodes at fractional ``positions``.

    Args:
        positions: Fractional node coordinates (node ``i`` sits at ``i``); values
            outside ``[0, n - 1]`` take the nearest node's value.
        n: Number of lattice nodes.

    Returns:
        Array of shape ``(len(positions), n)`` whose rows sum to 1.
    """
    p = np.clip(np.asarray(positions, dtype=np.float64), 0.0, n - 1.0)
    lo = np.minimum(np.floor(p).astype(int), n - 2) if n > 1 else np.zeros(len(p), int)
    frac = p - lo
    weights = np.zeros((len(p), n), dtype=np.float32)
    rows = np.arange(len(p))
    if n == 1:
        weights[:, 0] = 1.0
        return weights
    weights[rows, lo] = 1.0 - frac
    weights[rows, lo + 1] += frac
    return weights


def separable_sample(values: np.ndarray, matrices: tuple[np.ndarray, ...]) -> np.ndarray:
    """Evaluate a 3D lattice at the rows of three per-axis interpolation matrices.

    Args:
        values: Lattice values, shape ``(cx, cy, cz)``.
        matrices: Interpolation matrices of shapes ``(X, cx)``, ``(Y, cy)``, ``(Z, cz)``.

    Returns:
        float32 array of shape ``(X, Y, Z)``.
    """
    wx, wy, wz = matrices
    out = np.tensordot(wx, values.astype(np.float32), axes=(1, 0))  # X, cy, cz
    out = np.tensordot(out, wy, axes=(1, 1))  # X, cz, Y
    out = np.tensordot(out, wz, axes=(1, 1))  # X, Y, Z
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True)
class LatticeField:
    """Values on a regular lattice of control points in world millimetres.

    Attributes:
        origin: World position (mm) of node (0, 0, 0).
        step: Node spacing in mm.
        values: Array ``(K, cx, cy, cz)``: K field components.
    """

    origin: np.ndarray
    step: float
    values: np.ndarray

    def sample(self, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """The field at the grid spanned by three 1D world-coordinate axes: ``(K, X, Y, Z)``."""
        shape = self.values.shape[1:]
        mats = tuple(
            interpolation_matrix((np.asarray(a) - o) / self.step, n)
            for a, o, n in zip(axes_mm, self.origin, shape)
        )
        return np.stack([separable_sample(v, mats) for v in self.values])


def random_lattice_field(
    rng: np.random.Generator,
    lo_mm: np.ndarray,
    hi_mm: np.ndarray,
    step_mm: float,
    components: int = 1,
    smooth_nodes: float = 1.0,
) -> LatticeField:
    """A zero-mean, unit-standard-deviation smooth random field over a box.

    White noise on the lattice is smoothed with a Gaussian of ``smooth_nodes``
    lattice steps and rescaled to unit standard deviation, so that the amplitude
    is set by the caller.

    Args:
        rng: Random generator (consumes a number of draws fixed by the box and step).
        lo_mm: Lower corner of the box (world mm).
        hi_mm: Upper corner of the box (world mm).
        step_mm: Control-point spacing.
        components: Number of independent components (3 for a displacement).
        smooth_nodes: Gaussian smoothing in lattice steps.
    """
    lo = np.asarray(lo_mm, dtype=np.float64) - step_mm
    hi = np.asarray(hi_mm, dtype=np.float64) + step_mm
    shape = tuple(int(np.ceil((h - low) / step_mm)) + 1 for low, h in zip(lo, hi))
    values = rng.standard_normal((components, *shape))
    for k in range(components):
        smooth = ndimage.gaussian_filter(values[k], smooth_nodes, mode="reflect")
        values[k] = (smooth - smooth.mean()) / max(float(smooth.std()), 1e-6)
    return LatticeField(lo, float(step_mm), values.astype(np.float32))
