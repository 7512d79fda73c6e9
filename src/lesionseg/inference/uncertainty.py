"""Voxel-wise uncertainty from several probabilistic predictions of one case.

The "samples" are S probability maps of the same image: ensemble members, flip
test-time-augmentation passes or Monte-Carlo dropout passes. With p̄ the mean of
the samples' class distributions and H the Shannon entropy,

* entropy (total uncertainty) = H(p̄)
* mean entropy (expected, aleatoric part) = (1/S) Σₛ H(pₛ)
* mutual information (epistemic part, BALD) = H(p̄) − (1/S) Σₛ H(pₛ) ≥ 0

All three are divided by log K (K classes) so that they lie in [0, 1] whatever the
number of classes: 1 is a uniform mean distribution. A lesion-level measure,
:func:`detection_disagreement`, says how much the members agree on each lesion of
the final prediction.
"""

from __future__ import annotations

import math

import cc3d
import numpy as np

#: Order of the maps of :func:`uncertainty_maps` when they are stacked in a 4D file.
UNCERTAINTY_MAPS = ("entropy", "mutual_information")

_EPS = 1e-12


def _as_classes(samples: np.ndarray) -> np.ndarray:
    """``(S, K, *spatial)`` samples with K ≥ 2; a K = 1 map p becomes the classes (1 − p, p)."""
    samples = np.asarray(samples)
    if samples.ndim < 2:
        raise ValueError(
            f"samples must have shape (S, K, *spatial), got an array of shape {samples.shape}"
        )
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"samples need at least one sample and one class, got {samples.shape}")
    if samples.shape[1] == 1:
        # A single foreground map is a two-class problem; the background is implicit.
        p = samples.astype(np.float64, copy=False)
        return np.concatenate([1.0 - p, p], axis=1)
    return samples


def _entropy(probs: np.ndarray, eps: float) -> np.ndarray:
    """Normalised entropy over axis 0 of ``(K, *spatial)`` probabilities, as float64."""
    probs = probs.astype(np.float64, copy=False)
    # Clipping inside the log only: p·log(max(p, eps)) is 0 for p = 0 (the limit of
    # p log p), and round-off below 0 cannot give NaN.
    h = -np.sum(probs * np.log(np.clip(probs, eps, None)), axis=0)
    return h / math.log(probs.shape[0])


def _entropy_of_mean(samples: np.ndarray, eps: float) -> np.ndarray:
    """H(p̄) / log K as float64, before clipping; ``samples`` already has K ≥ 2."""
    # float64 accumulation: the mean of many float32 maps loses digits that the
    # difference H(p̄) − mean H, a small number, needs.
    return _entropy(samples.mean(axis=0, dtype=np.float64), eps)


def _mean_entropy(samples: np.ndarray, eps: float) -> np.ndarray:
    """(1/S) Σ H(pₛ) / log K as float64; ``samples`` already has K ≥ 2."""
    # One sample at a time, so that only one (K, *spatial) float64 copy is alive.
    total = np.zeros(samples.shape[2:], dtype=np.float64)
    for sample in samples:
        total += _entropy(sample, eps)
    return total / samples.shape[0]


def _unit(values: np.ndarray) -> np.ndarray:
    """Clip round-off just outside [0, 1] and return float32."""
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def entropy_of_mean(samples: np.ndarray, eps: float = _EPS) -> np.ndarray:
    """Entropy of the mean distribution (total predictive uncertainty), normalised to [0, 1].

    Args:
        samples: ``(S, K, *spatial)`` probabilities: S samples of K class
            probabilities that sum to 1 at every voxel (not checked). K = 1 means
            one foreground-probability map p per sample, taken as the two classes
            (1 − p, p).
        eps: Floor of the probabilities inside the logarithm, so that 0·log 0 = 0.

    Returns:
        ``(*spatial)`` float32 H(p̄) / log K: 0 where every sample gives probability 1
        to the same class, 1 where the mean distribution is uniform (0.5/0.5 for two
        classes).

    Raises:
        ValueError: ``samples`` has fewer than two axes, no sample or no class.

    Example:
        >>> float(entropy_of_mean(np.array([[[0.5]], [[0.5]]]))[0])
        1.0
    """
    return _unit(_entropy_of_mean(_as_classes(samples), eps))


def mean_entropy(samples: np.ndarray, eps: float = _EPS) -> np.ndarray:
    """Mean of the samples' entropies (expected or aleatoric uncertainty), normalised to [0, 1].

    Args:
        samples: ``(S, K, *spatial)`` probabilities as in :func:`entropy_of_mean`
            (K = 1: a foreground-probability map).
        eps: Floor of the probabilities inside the logarithm.

    Returns:
        ``(*spatial)`` float32 (1/S) Σₛ H(pₛ) / log K; 0 where every sample is
        one-hot, even when they disagree.

    Raises:
        ValueError: ``samples`` has fewer than two axes, no sample or no class.
    """
    return _unit(_mean_entropy(_as_classes(samples), eps))


def mutual_information(samples: np.ndarray, eps: float = _EPS) -> np.ndarray:
    """Mutual information between prediction and sample (epistemic uncertainty, BALD).

    Args:
        samples: ``(S, K, *spatial)`` probabilities as in :func:`entropy_of_mean`
            (K = 1: a foreground-probability map).
        eps: Floor of the probabilities inside the logarithm.

    Returns:
        ``(*spatial)`` float32 [H(p̄) − (1/S) Σₛ H(pₛ)] / log K, clipped at 0 (the
        difference is ≥ 0 by concavity of the entropy; round-off can make it
        slightly negative). 0 where all samples are equal; equal to the entropy of
        the mean where the samples are one-hot but disagree.

    Raises:
        ValueError: ``samples`` has fewer than two axes, no sample or no class.
    """
    samples = _as_classes(samples)
    return _unit(_entropy_of_mean(samples, eps) - _mean_entropy(samples, eps))


def uncertainty_maps(samples: np.ndarray, eps: float = _EPS) -> dict[str, np.ndarray]:
    """The voxel-wise uncertainty maps of one case, named as in :data:`UNCERTAINTY_MAPS`.

    Args:
        samples: ``(S, K, *spatial)`` probabilities as in :func:`entropy_of_mean`
            (K = 1: a foreground-probability map).
        eps: Floor of the probabilities inside the logarithm.

    Returns:
        ``{"entropy": ..., "mutual_information": ...}``, each ``(*spatial)`` float32
        in [0, 1], in the order of :data:`UNCERTAINTY_MAPS`.

    Raises:
        ValueError: ``samples`` has fewer than two axes, no sample or no class.
    """
    samples = _as_classes(samples)
    # The entropy of the mean is computed once and used for both maps.
    total = _entropy_of_mean(samples, eps)
    maps = {
        "entropy": _unit(total),
        "mutual_information": _unit(total - _mean_entropy(samples, eps)),
    }
    return {name: maps[name] for name in UNCERTAINTY_MAPS}


def detection_disagreement(
    lesions: np.ndarray, member_masks: np.ndarray, connectivity: int = 26
) -> dict[int, float]:
    """How much the members of an ensemble disagree about each lesion of the final prediction.

    For lesion L and member s, the best IoU is the largest |L ∩ C| / |L ∪ C| over
    the connected components C of member s's mask (0 when no component touches L).
    The disagreement of L is 1 − the mean of the best IoUs over the members: 0 when
    every member has exactly that lesion, 1 when no member has any of it.

    Args:
        lesions: Integer label image of the final prediction's lesions (0
            background, lesion ids ≥ 1, e.g. from ``cc3d.connected_components``);
            the ids need not be consecutive.
        member_masks: ``(S, *spatial)`` binary lesion masks of the S members
            (non-zero is lesion).
        connectivity: Connectivity of the members' components, as for
            ``cc3d.connected_components`` (6, 18 or 26 in 3D; 4 or 8 in 2D). The
            lesions are taken as labelled.

    Returns:
        ``{lesion id: disagreement in [0, 1]}`` for every id present in ``lesions``.

    Raises:
        ValueError: ``lesions`` is not an integer image, has negative labels, or its
            shape differs from the members' masks; there is no member.
    """
    lesions = np.asarray(lesions)
    member_masks = np.asarray(member_masks)
    if not np.issubdtype(lesions.dtype, np.integer):
        raise ValueError(f"lesions must be an integer label image, got dtype {lesions.dtype}")
    if member_masks.ndim != lesions.ndim + 1 or member_masks.shape[1:] != lesions.shape:
        raise ValueError(
            f"member_masks must have shape (S, {', '.join(map(str, lesions.shape))}), "
            f"got {member_masks.shape}"
        )
    if member_masks.shape[0] == 0:
        raise ValueError("detection_disagreement needs at least one member mask")
    if lesions.size == 0 or not lesions.any():
        return {}
    if lesions.min() < 0:
        raise ValueError("lesions has negative labels")
    if not (lesions.flags.c_contiguous or lesions.flags.f_contiguous):
        lesions = np.ascontiguousarray(lesions)

    stats = cc3d.statistics(lesions)
    sizes = np.asarray(stats["voxel_counts"], dtype=np.int64)
    # Ids absent from a non-consecutive labelling have size 0 (and no bounding box).
    ids = [i for i in range(1, len(sizes)) if sizes[i] > 0]
    boxes = {i: stats["bounding_boxes"][i] for i in ids}
    # Crop each lesion once; the members' components are looked at only inside these
    # boxes, since a component that misses the box misses the lesion.
    lesion_crops = {i: lesions[boxes[i]] == i for i in ids}
    best_sum = dict.fromkeys(ids, 0.0)

    for mask in member_masks:
        components, n = cc3d.connected_components(
            np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity, return_N=True
        )
        if n == 0:
            continue  # this member found nothing: best IoU 0 for every lesion
        comp_sizes = np.bincount(components.ravel(), minlength=n + 1)
        for i in ids:
            # |L ∩ C| of the components C under L's voxels; np.unique rather than a
            # bincount of length n, which a noisy member with many components would
            # make cost O(n) per lesion.
            touching, inter = np.unique(components[boxes[i]][lesion_crops[i]], return_counts=True)
            inter = inter[touching > 0]  # background is not a component
            touching = touching[touching > 0]
            if touching.size == 0:
                continue
            union = sizes[i] + comp_sizes[touching] - inter
            best_sum[i] += float(np.max(inter / union))

    count = member_masks.shape[0]
    return {i: 1.0 - best_sum[i] / count for i in ids}


class UncertaintyAccumulator:
    """Gathers a case's predictions one at a time for :func:`uncertainty_maps`.

    Keeps the sum of the class probabilities and of the per-sample entropies (float64)
    and each prediction's label map, not the predictions themselves: S predictions of
    a 1 mm brain would take S × 60 MB.
    """

    def __init__(self, eps: float = _EPS) -> None:
        self.eps = eps
        self.count = 0
        self._sum: np.ndarray | None = None
        self._entropy_sum: np.ndarray | None = None
        self._labels: list[np.ndarray] = []

    def add(self, probs: np.ndarray) -> None:
        """Add one prediction, ``(K, *spatial)`` class probabilities (K = 1: foreground)."""
        probs = _as_classes(np.asarray(probs)[None])[0]
        if self._sum is None:
            self._sum = np.zeros(probs.shape, np.float64)
            self._entropy_sum = np.zeros(probs.shape[1:], np.float64)
        self._sum += probs
        self._entropy_sum += _entropy(probs, self.eps)
        self._labels.append(np.argmax(probs, axis=0).astype(np.uint8))
        self.count += 1

    def maps(self) -> dict[str, np.ndarray]:
        """The uncertainty maps of the predictions added (:data:`UNCERTAINTY_MAPS` order).

        Raises:
            ValueError: Nothing was added.
        """
        if not self.count:
            raise ValueError("no prediction was added")
        total = _entropy(self._sum / self.count, self.eps)
        maps = {
            "entropy": _unit(total),
            "mutual_information": _unit(total - self._entropy_sum / self.count),
        }
        return {name: maps[name] for name in UNCERTAINTY_MAPS}

    def label_maps(self) -> np.ndarray:
        """``(*spatial, S)`` uint8: each prediction's label map (argmax), last axis."""
        return np.stack(self._labels, axis=-1)
