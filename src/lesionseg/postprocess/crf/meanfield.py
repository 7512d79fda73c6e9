"""Mean-field inference of the 3D fully connected CRF (DeepMedic's post-processing).

Model (Krähenbühl & Koltun 2011; Kamnitsas et al. 2017 §2.5): unaries ``U = -log p`` from
the network's class probabilities, Potts compatibility, and two Gaussian kernels:

* smoothness: ``exp(-Σ_d (p_i,d - p_j,d)² / 2σ_d²)`` over voxel positions in mm;
* appearance: the same over positions (its own σ) and over every image channel
  (intensities mapped to [0, 255] as the official code does, one σ per channel).

Mean field: ``Q ← softmax(-U)``, then each iteration ``Q ← softmax(-U + Σ_k w_k K̃_k Q)``,
where ``K̃_k = D^-1/2 K_k D^-1/2`` with ``D = diag(K_k 1)`` is the symmetrically normalised
kernel (the official code's normalisation; its sum includes the voxel itself). With Potts
compatibility this is the paper's update up to a per-voxel constant, which the softmax
removes.

The appearance kernel is filtered with the permutohedral lattice
(:mod:`~lesionseg.postprocess.crf.lattice`), except for the voxels that share the image's
most common intensity vector (the background of skull-stripped images), which are handled
exactly with separable Gaussian filters, cross terms included
(:mod:`~lesionseg.postprocess.crf.appearance`). The smoothness kernel involves positions
only, which lie on the voxel grid, so it is computed exactly with a separable Gaussian
filter (truncated at 4σ, :mod:`~lesionseg.postprocess.crf.gaussian`) instead of a second
lattice: that is exact rather than approximate, and on a 182×218×182 volume it costs
0.05 s per filtering and no memory besides the output, against seconds to build a 3D
lattice and 230 MB to keep it.

For the last class the filtered map is obtained as ``K̃ 1 - Σ_(other classes)``, since
the classes' Q sum to one: a binary CRF filters one channel per iteration instead of two.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numba as nb
import numpy as np
from tqdm import tqdm

from lesionseg.errors import LesionsegError
from lesionseg.postprocess.crf.appearance import AppearanceFilter
from lesionseg.postprocess.crf.gaussian import GridGaussian
from lesionseg.postprocess.crf.params import CRFParams


def map_intensities(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map image values to the official CRF's [0, 255] scale.

    As the official code: ``255 (v - low) / (high - low)``, clipped to [0, 254] and
    truncated to an integer.

    Args:
        image: ``(C, X, Y, Z)`` array (z-scored images suit ``low, high = ±3.1``).
        low: Value mapped to 0.
        high: Value mapped to 255.

    Returns:
        ``(C, X·Y·Z)`` uint8 array.
    """
    channels = image.shape[0]
    out = np.empty((channels, int(np.prod(image.shape[1:]))), np.uint8)
    factor = 255.0 / (high - low)
    for c in range(channels):
        values = (image[c].reshape(-1).astype(np.float32) - np.float32(low)) * np.float32(factor)
        np.clip(values, 0, 254, out=values)
        out[c] = values  # truncation toward zero, as the C cast to unsigned char
    return out


@nb.njit(cache=True, parallel=True)
def _softmax_of_negative(energy, out):  # pragma: no cover - compiled
    """``out = softmax(-energy)`` over axis 0, per voxel."""
    k, n = energy.shape
    if k == 2:  # a logistic function: one exponential instead of two (in float32)
        one = np.float32(1.0)
        for i in nb.prange(n):
            p = one / (one + math.exp(energy[0, i] - energy[1, i]))
            out[0, i] = p
            out[1, i] = one - p
        return
    for i in nb.prange(n):
        low = energy[0, i]
        for c in range(1, k):
            low = min(low, energy[c, i])
        total = 0.0
        for c in range(k):
            e = math.exp(low - energy[c, i])
            out[c, i] = e
            total += e
        for c in range(k):
            out[c, i] /= total


@nb.njit(cache=True, parallel=True)
def _add_message(energy, weight, norm, filtered, filtered_norm):  # pragma: no cover - compiled
    """``energy -= w · K̃Q``; the last class's filtered map is ``K(norm) - Σ others``."""
    k, n = energy.shape
    for i in nb.prange(n):
        rest = filtered_norm[i]
        for c in range(k - 1):
            rest -= filtered[c, i]
            energy[c, i] -= weight * norm[i] * filtered[c, i]
        energy[k - 1, i] -= weight * norm[i] * rest


#: Below this many voxels the kernels run on one thread: each parallel loop waits for every
#: thread, and on a busy machine (or for a small volume) waiting costs more than it saves
#: (a 20³ CRF: 0.04 s on one thread, over 1 s on two when the other core is taken).
PARALLEL_MIN_VOXELS = 1 << 20


@contextlib.contextmanager
def _numba_threads(threads: int | None, n_voxels: int) -> Iterator[None]:
    """Run the compiled kernels with ``threads`` threads (None: numba's default).

    Volumes under :data:`PARALLEL_MIN_VOXELS` voxels always run on one thread.
    """
    if threads is None and n_voxels >= PARALLEL_MIN_VOXELS:
        yield
        return
    wanted = 1 if n_voxels < PARALLEL_MIN_VOXELS else int(threads)
    previous = nb.get_num_threads()
    nb.set_num_threads(max(1, min(wanted, nb.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        nb.set_num_threads(previous)


def check_inputs(probabilities: np.ndarray, image: np.ndarray, spacing: Sequence[float]) -> None:
    """Validate shapes and values of the CRF's inputs.

    Raises:
        LesionsegError: Wrong dimensions, mismatched grids, values that are not
            probabilities, non-finite values or a bad spacing.
    """
    if probabilities.ndim != 4 or probabilities.shape[0] < 2:
        raise LesionsegError(
            f"CRF probabilities must be (classes ≥ 2, X, Y, Z), got shape {probabilities.shape}"
        )
    if image.ndim != 4 or image.shape[0] < 1:
        raise LesionsegError(f"CRF image must be (channels, X, Y, Z), got shape {image.shape}")
    if probabilities.shape[1:] != image.shape[1:]:
        raise LesionsegError(
            f"CRF probabilities {probabilities.shape[1:]} and image {image.shape[1:]} are on "
            "different grids"
        )
    if len(spacing) != 3 or any(not math.isfinite(s) or s <= 0 for s in spacing):
        raise LesionsegError(f"voxel spacing must be 3 positive numbers, got {list(spacing)}")
    if not np.all(np.isfinite(image)):
        raise LesionsegError("CRF image contains NaN or Inf values")
    low, high = float(np.min(probabilities)), float(np.max(probabilities))
    if not (math.isfinite(low) and math.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
        raise LesionsegError(
            f"CRF probabilities must lie in [0, 1], found values in [{low:.4g}, {high:.4g}]"
        )


def dense_crf(
    probabilities: np.ndarray,
    image: np.ndarray,
    spacing: Sequence[float],
    params: CRFParams | None = None,
    *,
    threads: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Refine class probabilities with the 3D fully connected CRF.

    Args:
        probabilities: ``(K, X, Y, Z)`` class probabilities (K ≥ 2), e.g. a softmax output.
        image: ``(C, X, Y, Z)`` image channels on the same grid (z-scored for the default
            intensity range).
        spacing: Voxel size in mm along X, Y, Z.
        params: CRF settings (default: the official ones).
        threads: Threads for the compiled kernels (default: numba's setting); volumes
            under :data:`PARALLEL_MIN_VOXELS` voxels use one.
        progress: Show a progress bar.

    Returns:
        ``(K, X, Y, Z)`` float32 refined probabilities (the mean-field marginals).

    Raises:
        LesionsegError: Invalid inputs or parameters (see :func:`check_inputs`).
    """
    params = params or CRFParams()
    check_inputs(probabilities, image, spacing)
    n_classes = probabilities.shape[0]
    shape = tuple(int(s) for s in probabilities.shape[1:])
    n = int(np.prod(shape))
    sigmas = params.intensity_sigmas(image.shape[0])

    unary = probabilities.reshape(n_classes, n).astype(np.float32)
    np.clip(unary, params.min_probability, 1.0, out=unary)
    np.log(unary, out=unary)
    np.negative(unary, out=unary)
    q = np.empty_like(unary)
    with _numba_threads(threads, n):
        _softmax_of_negative(unary, q)
        weighted = [
            (w, kernel)
            for w, kernel in (
                (params.smoothness_weight, "smoothness"),
                (params.appearance_weight, "appearance"),
            )
            if w > 0
        ]
        if params.iterations == 0 or not weighted:
            return q.reshape(probabilities.shape)
        bar = tqdm(
            total=len(weighted) + params.iterations, desc="CRF", unit="step", disable=not progress
        )
        kernels = []
        for weight, name in weighted:
            if name == "smoothness":
                sigma = [s / h for s, h in zip(params.smoothness_sigma_mm, spacing)]
                kernel = GridGaussian(shape, sigma)
            else:
                sigma = [s / h for s, h in zip(params.appearance_sigma_mm, spacing)]
                intensities = map_intensities(image, *params.intensity_range)
                kernel = AppearanceFilter(intensities, sigmas, shape, sigma)
                del intensities
            norm, filtered_norm = kernel.normalisers()
            kernels.append((np.float32(weight), kernel, norm, filtered_norm))
            bar.update()
        energy = np.empty_like(unary)
        scaled = np.empty_like(unary[:-1])
        filtered = np.empty_like(scaled)  # reused: fresh pages cost time to zero
        for _ in range(params.iterations):
            np.copyto(energy, unary)
            for weight, kernel, norm, filtered_norm in kernels:
                np.multiply(q[:-1], norm[None], out=scaled)
                kernel.filter(scaled, out=filtered)
                _add_message(energy, weight, norm, filtered, filtered_norm)
            _softmax_of_negative(energy, q)
            bar.update()
        bar.close()
    return q.reshape(probabilities.shape)


def crf_labels(refined: np.ndarray) -> np.ndarray:
    """Label map (uint8, argmax over classes) of ``(K, X, Y, Z)`` probabilities."""
    return np.argmax(refined, axis=0).astype(np.uint8)
