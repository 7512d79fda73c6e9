"""Acquisition effects: smooth multiplicative bias field and Rician noise.

Magnitude MR images have Rician noise: the modulus of the true signal plus complex
Gaussian noise of standard deviation σ in each of the real and imaginary channels.
The SNR is defined as the white-matter signal over σ. Where the signal is high the
noise is nearly Gaussian with standard deviation σ; in dark regions (CSF on FLAIR)
it is biased upwards, as in real scans.
"""

from __future__ import annotations

import numpy as np

from lesionseg.data.phantoms.anatomy import field_of_view
from lesionseg.data.phantoms.fields import random_lattice_field


def bias_field(
    rng: np.random.Generator,
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
    amplitude: float,
    control_mm: float = 45.0,
) -> np.ndarray:
    """A smooth multiplicative field ``exp(amplitude · f)`` with ``f`` a unit-std smooth field.

    Args:
        rng: Random generator (draw count independent of the grid).
        axes_mm: World coordinates of the grid along each axis.
        amplitude: Standard deviation of the log field (0.1 ≈ ±20 % across the brain).
        control_mm: Lattice spacing; larger is smoother.
    """
    lo, hi = field_of_view()
    lattice = random_lattice_field(rng, lo, hi, control_mm, components=1, smooth_nodes=1.0)
    return np.exp(np.float32(amplitude) * lattice.sample(axes_mm)[0]).astype(np.float32)


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Add Rician noise of Gaussian standard deviation ``sigma`` to a non-negative signal."""
    real = rng.standard_normal(signal.shape, dtype=np.float32)
    real *= np.float32(sigma)
    real += signal
    imag = rng.standard_normal(signal.shape, dtype=np.float32)
    imag *= np.float32(sigma)
    return np.sqrt(real * real + imag * imag)
