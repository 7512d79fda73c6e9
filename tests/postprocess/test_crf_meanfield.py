"""Mean-field CRF against a brute-force O(N²) reference, and its behaviour on synthetic cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.special import softmax

from lesionseg.errors import LesionsegError
from lesionseg.postprocess import POSTPROCESS
from lesionseg.postprocess.crf import (
    CRFParams,
    appearance,
    crf_labels,
    dense_crf,
    map_intensities,
    meanfield,
)
from lesionseg.postprocess.crf.appearance import AppearanceFilter
from lesionseg.postprocess.crf.lattice import PermutohedralLattice


def _kernels(shape, spacing, image, params, exact_appearance=True):
    """Dense symmetric-normalised kernel matrices ``w D^-1/2 K D^-1/2`` (self term included)."""
    n = int(np.prod(shape))
    pos = np.indices(shape).reshape(3, n) * np.asarray(spacing, float)[:, None]
    intensities = map_intensities(image, *params.intensity_range).astype(np.float64)
    sigmas = np.asarray(params.intensity_sigmas(image.shape[0]))[:, None]
    out = []
    if params.smoothness_weight > 0:
        out.append(
            (params.smoothness_weight, pos / np.asarray(params.smoothness_sigma_mm)[:, None])
        )
    if params.appearance_weight > 0 and exact_appearance:
        feats = np.concatenate(
            [pos / np.asarray(params.appearance_sigma_mm)[:, None], intensities / sigmas]
        )
        out.append((params.appearance_weight, feats))
    mats = []
    for weight, f in out:
        sq = (f**2).sum(0)
        k = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * f.T @ f, 0) / 2)
        norm = 1 / np.sqrt(k.sum(1))
        mats.append(weight * norm[:, None] * k * norm[None, :])
    return mats


def brute_force_crf(prob, image, spacing, params):
    """Explicit mean field with exact Gaussian kernels (every pair of voxels)."""
    k = prob.shape[0]
    n = int(np.prod(prob.shape[1:]))
    unary = -np.log(np.clip(prob.reshape(k, n).astype(np.float64), params.min_probability, 1))
    mats = _kernels(prob.shape[1:], spacing, image, params)
    q = softmax(-unary, axis=0)
    for _ in range(params.iterations):
        energy = -unary.copy()
        for m in mats:
            energy += q @ m.T
        q = softmax(energy, axis=0)
    return q.reshape(prob.shape)


def synthetic_case(seed=0, classes=2, channels=1, shape=(12, 12, 12)):
    """Blocks of classes, images with class contrast and noise, noisy smooth probabilities."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, int)
    labels[3:9, 2:8, 4:10] = 1
    if classes == 3:
        labels[6:11, 7:11, 1:6] = 2
    image = np.stack(
        [labels * (1.0 + 0.5 * c) + rng.normal(0, 0.3, shape) for c in range(channels)]
    ).astype(np.float32)
    image = (image - image.mean()) / image.std()
    logits = np.stack([(labels == k) * 2.0 for k in range(classes)]) + rng.normal(
        0, 0.8, (classes, *shape)
    )
    logits = ndi.gaussian_filter(logits, (0, 0.8, 0.8, 0.8))
    return softmax(2 * logits, axis=0).astype(np.float32), image


def test_smoothness_only_equals_brute_force():
    # the smoothness kernel is filtered exactly (separable Gaussian): only float32 rounding
    # and the 4σ truncation (weights below e^-8) separate it from the dense matrix
    prob, image = synthetic_case(seed=1, classes=3, channels=1)
    params = CRFParams(
        appearance_weight=0.0, smoothness_weight=4.0, smoothness_sigma_mm=(2, 1.5, 2.5)
    )
    spacing = (1.0, 1.2, 0.9)
    expected = brute_force_crf(prob, image, spacing, params)
    np.testing.assert_allclose(dense_crf(prob, image, spacing, params), expected, atol=2e-3)


CASES = [
    (2, 1, (1.0, 1.0, 1.0)),
    (2, 1, (1.0, 1.5, 2.0)),
    (3, 2, (1.0, 1.0, 1.0)),
    (3, 2, (0.8, 1.0, 1.6)),
]


def test_official_crf_agrees_with_brute_force():
    """Full CRF (official defaults) against exact dense mean field on 12³ volumes.

    Tolerance: the only approximation is the lattice's appearance filter. Its error on the
    normalised filter, ε (measured below on the same inputs, ≈ 0.005-0.01 mean), enters the
    energy with the kernel weight, and a binary softmax moves by at most a quarter of an
    energy change; over the iterations changes re-enter through the messages, so the
    probabilities may differ by about ``w ε`` on average. Near a decision boundary mean
    field can tip a whole cluster of voxels either way, so labels are checked for ≥ 99%
    agreement over all cases (and ≥ 98.5% in each) rather than for every voxel.
    """
    params = CRFParams()
    agree = total = 0
    for seed, (classes, channels, spacing) in enumerate(CASES):
        prob, image = synthetic_case(seed, classes, channels)
        expected = brute_force_crf(prob, image, spacing, params)
        refined = dense_crf(prob, image, spacing, params)
        assert refined.shape == prob.shape and refined.dtype == np.float32
        np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-5)

        # lattice error of the normalised appearance filter on the input probabilities
        shape, n = prob.shape[1:], int(np.prod(prob.shape[1:]))
        sigma = [s / h for s, h in zip(params.appearance_sigma_mm, spacing)]
        intensities = map_intensities(image, *params.intensity_range)
        lattice = PermutohedralLattice(
            intensities,
            1 / np.asarray(params.intensity_sigmas(channels)),
            shape,
            [1 / s for s in sigma],
        )
        q = prob.reshape(classes, n)
        norm = 1 / np.sqrt(lattice.filter(np.ones((1, n), np.float32))[0])
        approx = norm * lattice.filter((q * norm).astype(np.float32))
        exact = _kernels(shape, spacing, image, params.with_changes(smoothness_weight=0))[0]
        eps = np.abs(approx - q @ exact.T / params.appearance_weight).mean()
        assert eps < 0.02

        difference = np.abs(refined - expected)
        assert difference.mean() <= params.appearance_weight * eps
        same = crf_labels(refined) == expected.argmax(0)
        assert same.mean() >= 0.985
        agree += int(same.sum())
        total += same.size
        # the CRF did something: otherwise agreement would say nothing
        assert (expected.argmax(0) != prob.argmax(0)).any()
    assert agree / total >= 0.99


def test_zero_weights_give_argmax_of_input():
    prob, image = synthetic_case(seed=2, classes=3, channels=2)
    for params in (CRFParams(smoothness_weight=0, appearance_weight=0), CRFParams(iterations=0)):
        refined = dense_crf(prob, image, (1, 1, 1), params)
        np.testing.assert_array_equal(crf_labels(refined), prob.argmax(0))
        np.testing.assert_allclose(refined, prob / prob.sum(0), atol=1e-6)


def test_removes_small_low_contrast_blob_keeps_large_lesion():
    rng = np.random.default_rng(0)
    shape = (32, 32, 32)
    grid = np.indices(shape)
    lesion = ((grid - np.array([10, 16, 16])[:, None, None, None]) ** 2).sum(0) <= 36  # r = 6
    blob = ((grid - np.array([24, 22, 10])[:, None, None, None]) ** 2).sum(0) <= 1  # 7 voxels
    # the lesion is bright on the image; the blob has no image support (low contrast)
    image = (lesion * 2.0 + rng.normal(0, 0.3, shape)).astype(np.float32)[None]
    image = (image - image.mean()) / image.std()
    fg = np.full(shape, 0.05, np.float32)
    fg[lesion] = 0.85
    fg[blob] = 0.75
    fg = np.clip(fg + rng.normal(0, 0.03, shape).astype(np.float32), 0.001, 0.999)
    prob = np.stack([1 - fg, fg])
    labels = crf_labels(dense_crf(prob, image, (1, 1, 1), CRFParams()))
    assert prob.argmax(0)[blob].all()  # the input does predict the blob
    assert not labels[blob].any()
    dice = 2 * (labels.astype(bool) & lesion).sum() / (labels.sum() + lesion.sum())
    assert dice > 0.95


def test_spacing_is_honoured():
    """The same physical σ gives the same result on a volume with 2 mm slices.

    A 6 mm thick slab of uncertain lesion survives the CRF on 1 mm voxels only partly: how
    much survives depends on the kernels' extent across the slab, so reading 2 mm slices
    as 1 mm (doubling the σ across it) changes the result, and honouring the spacing not.
    """
    rng = np.random.default_rng(0)
    shape = (24, 24, 32)
    slab = np.zeros(shape, bool)
    slab[4:20, 4:20, 13:19] = True
    image = (slab * 0.5 + rng.normal(0, 0.3, shape))[None].astype(np.float32)
    image = (image - image.mean()) / image.std()
    fg = np.clip(np.where(slab, 0.8, 0.2) + rng.normal(0, 0.05, shape), 0.01, 0.99).astype(
        np.float32
    )
    prob = np.stack([1 - fg, fg])
    fine = crf_labels(dense_crf(prob, image, (1, 1, 1)))[:, :, ::2]
    coarse_prob, coarse_image = prob[..., ::2], image[..., ::2]  # 1 × 1 × 2 mm voxels
    honoured = crf_labels(dense_crf(coarse_prob, coarse_image, (1, 1, 2)))
    ignored = crf_labels(dense_crf(coarse_prob, coarse_image, (1, 1, 1)))
    assert 0 < fine.sum() < slab[:, :, ::2].sum()  # the CRF removed part of the slab
    assert (honoured == fine).mean() >= 0.995
    assert (ignored != fine).sum() > 5 * (honoured != fine).sum()


def test_class_order_does_not_matter():
    # the last class's message comes from K̃1 minus the others: permuting classes must
    # permute the result
    prob, image = synthetic_case(seed=3, classes=3, channels=2)
    order = [2, 0, 1]
    a = dense_crf(prob, image, (1, 1, 1), CRFParams())
    b = dense_crf(np.ascontiguousarray(prob[order]), image, (1, 1, 1), CRFParams())
    np.testing.assert_allclose(b, a[order], atol=1e-4)


def test_map_intensities_follows_official_formula():
    image = np.array([-5, -3.1, 0.0, 1.0, 3.0, 3.1, 7.0], np.float32).reshape(1, 7, 1, 1)
    mapped = map_intensities(image, -3.1, 3.1)[0]
    # 255 (v + 3.1) / 6.2, clipped to [0, 254], truncated
    assert mapped.tolist() == [0, 0, 127, 168, 250, 254, 254]
    assert mapped.dtype == np.uint8


@pytest.mark.parametrize(
    "prob, image, spacing, message",
    [
        (np.ones((1, 4, 4, 4)), np.zeros((1, 4, 4, 4)), (1, 1, 1), "classes"),
        (np.full((2, 4, 4, 4), 0.5), np.zeros((1, 4, 4, 5)), (1, 1, 1), "different grids"),
        (np.full((2, 4, 4, 4), 1.5), np.zeros((1, 4, 4, 4)), (1, 1, 1), "[0, 1]"),
        (np.full((2, 4, 4, 4), 0.5), np.full((1, 4, 4, 4), np.nan), (1, 1, 1), "NaN"),
        (np.full((2, 4, 4, 4), 0.5), np.zeros((1, 4, 4, 4)), (1, 0, 1), "spacing"),
        (np.full((2, 4, 4, 4), 0.5), np.zeros((4, 4, 4)), (1, 1, 1), "channels"),
    ],
)
def test_bad_inputs_are_user_errors(prob, image, spacing, message):
    with pytest.raises(LesionsegError, match=message.replace("[", r"\[").replace("]", r"\]")):
        dense_crf(prob.astype(np.float32), image.astype(np.float32), spacing)


def test_registered_step_uses_params_mask_and_overrides(tmp_path):
    prob, image = synthetic_case(seed=4, classes=2, channels=1)
    params = CRFParams(iterations=3, appearance_weight=8.0)
    path = tmp_path / "crf.json"
    params.save(path)
    step = POSTPROCESS.get("crf")
    expected = dense_crf(prob, image, (1, 1, 1), params)
    np.testing.assert_allclose(
        step(prob, image=image, spacing=(1, 1, 1), params=str(path)), expected
    )
    np.testing.assert_allclose(
        step(prob, image=image, spacing=(1, 1, 1), params=str(path), iterations=0),
        prob / prob.sum(0),
        atol=1e-6,
    )
    mask = np.zeros(prob.shape[1:], np.uint8)
    mask[2:10, 2:10, 2:10] = 1
    masked = step(prob, image=image, spacing=(1, 1, 1), mask=mask, params=params)
    np.testing.assert_array_equal(masked[:, mask == 0], prob[:, mask == 0])
    np.testing.assert_allclose(masked[:, mask == 1], expected[:, mask == 1])
    with pytest.raises(LesionsegError, match="unknown CRF parameter"):
        step(prob, image=image, spacing=(1, 1, 1), bogus=1)


def background_case(seed=0, channels=2, shape=(16, 16, 14)):
    """A z-scored "brain" with a lesion inside a background of zeros, as skull-stripped data."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2
    brain = ((grid / np.array([6.5, 7.0, 5.5])[:, None, None, None]) ** 2).sum(0) <= 1
    lesion = ((grid - np.array([1, 2, 0])[:, None, None, None]) ** 2).sum(0) <= 9
    image = np.stack(
        [1.0 + lesion * (1 + 0.5 * c) + rng.normal(0, 0.3, shape) for c in range(channels)]
    )
    image = (image - image[:, brain].mean(1)[:, None, None, None]) / image[:, brain].std(1)[
        :, None, None, None
    ]
    image[:, ~brain] = 0
    logits = np.stack([np.zeros(shape), lesion * 3.0 - 1.5 + rng.normal(0, 1, shape)])
    fg = softmax(2 * ndi.gaussian_filter(logits, (0, 0.8, 0.8, 0.8)), axis=0)[1] * brain
    return np.stack([1 - fg, fg]).astype(np.float32), image.astype(np.float32), brain


@pytest.mark.parametrize("channels, spacing", [(1, (1.0, 1.0, 1.0)), (3, (1.0, 1.5, 2.0))])
def test_background_split_crf_agrees_with_brute_force(channels, spacing, monkeypatch):
    """Skull-stripped input: the background goes through exact grid filters, the brain
    through the lattice; against the exact dense mean field (same tolerance as above) and
    against the CRF with one lattice over every voxel (the official computation)."""
    prob, image, brain = background_case(channels, channels)
    params = CRFParams()
    sigma = [s / h for s, h in zip(params.appearance_sigma_mm, spacing)]
    mapped = map_intensities(image, *params.intensity_range)
    split = AppearanceFilter(mapped, params.intensity_sigmas(channels), brain.shape, sigma)
    # brain voxels whose mapped intensities equal the background's are background too
    assert split.split and 0.95 * brain.sum() <= split.n_lattice_points <= brain.sum()
    assert split.near.size > 0
    expected = brute_force_crf(prob, image, spacing, params)
    refined = dense_crf(prob, image, spacing, params)
    assert (expected.argmax(0) != prob.argmax(0)).any()  # the CRF changes labels here
    assert np.abs(refined - expected).mean() <= params.appearance_weight * 0.01
    assert (crf_labels(refined) == expected.argmax(0)).mean() >= 0.99
    monkeypatch.setattr(appearance, "MIN_BACKGROUND_FRACTION", 2.0)  # no split
    full = dense_crf(prob, image, spacing, params)
    assert np.abs(refined - expected).mean() <= np.abs(full - expected).mean() * 1.1
    assert (crf_labels(refined) == crf_labels(full)).mean() >= 0.995


def test_constant_image_crf_equals_brute_force():
    # one intensity everywhere: the appearance kernel is a spatial Gaussian, filtered
    # exactly, so only float32 rounding and the 4σ truncation separate it from the reference
    prob, _ = synthetic_case(seed=5, classes=3, channels=2)
    image = np.zeros((2, *prob.shape[1:]), np.float32)
    params = CRFParams(appearance_sigma_mm=(2.0, 2.5, 1.5), smoothness_sigma_mm=(1.0, 1.0, 2.0))
    expected = brute_force_crf(prob, image, (1, 1, 1), params)
    np.testing.assert_allclose(dense_crf(prob, image, (1, 1, 1), params), expected, atol=2e-3)


def test_two_threads_give_the_same_result(monkeypatch):
    prob, image, _ = background_case(seed=2, channels=2)
    monkeypatch.setattr(meanfield, "PARALLEL_MIN_VOXELS", 0)  # parallel even when small
    one = dense_crf(prob, image, (1, 1, 1), threads=1)
    two = dense_crf(prob, image, (1, 1, 1), threads=2)
    np.testing.assert_allclose(one, two, atol=1e-5)
