"""Voxel-wise uncertainty maps and lesion-wise detection disagreement, against hand values."""

import doctest
import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from lesionseg.inference import uncertainty as unc_module
from lesionseg.inference.uncertainty import (
    UNCERTAINTY_MAPS,
    detection_disagreement,
    entropy_of_mean,
    mean_entropy,
    mutual_information,
    uncertainty_maps,
)


def _h(probs):
    """Entropy in nats of one distribution, 0·log 0 = 0, by hand."""
    return -sum(p * math.log(p) for p in probs if p > 0)


def _binary(*ps):
    """(S, 1, 1) samples of one voxel's foreground probability."""
    return np.array(ps, dtype=np.float64).reshape(-1, 1, 1)


# --- entropy, mean entropy, mutual information ------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
def test_zero_where_all_samples_agree_with_certainty(k):
    samples = np.zeros((4, k, 3, 2), dtype=np.float32)
    samples[:, k - 1] = 1.0  # every sample: probability 1 on the last class
    for fn in (entropy_of_mean, mean_entropy, mutual_information):
        out = fn(samples)
        assert out.shape == (3, 2) and out.dtype == np.float32
        np.testing.assert_array_equal(out, 0.0)


def test_maximal_at_uniform_mean():
    # K = 2 at 0.5/0.5, in both the two-class and the single-map form.
    two = np.full((3, 2, 4), 0.5)
    np.testing.assert_allclose(entropy_of_mean(two), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(entropy_of_mean(np.full((3, 1, 4), 0.5)), 1.0, atol=1e-6)
    # K = 3 uniform: exactly log 3 nats before normalisation.
    three = np.full((2, 3, 4), 1 / 3)
    np.testing.assert_allclose(entropy_of_mean(three), 1.0, atol=1e-6)
    # A non-uniform mean is strictly below 1.
    skewed = np.array([[0.5, 0.3, 0.2]]).reshape(1, 3, 1)
    assert entropy_of_mean(skewed)[0] < 0.99


def test_single_map_is_two_classes():
    rng = np.random.default_rng(0)
    p = rng.random((4, 1, 5, 6))
    two = np.concatenate([1 - p, p], axis=1)
    for fn in (entropy_of_mean, mean_entropy, mutual_information):
        np.testing.assert_allclose(fn(p), fn(two), atol=1e-6)


def test_identical_samples_have_no_mutual_information():
    sample = np.array([0.7, 0.2, 0.1]).reshape(1, 3, 1)
    samples = np.repeat(sample, 5, axis=0)
    expected = _h([0.7, 0.2, 0.1]) / math.log(3)
    assert entropy_of_mean(samples)[0] == pytest.approx(expected, abs=1e-6)
    assert mean_entropy(samples)[0] == pytest.approx(expected, abs=1e-6)
    assert mutual_information(samples)[0] == pytest.approx(0.0, abs=1e-7)
    assert mutual_information(samples)[0] >= 0.0  # clipped, never negative round-off


def test_disagreeing_one_hot_samples_are_all_epistemic():
    # K = 2: one sample says background, one says lesion.
    samples = _binary(0.0, 1.0)
    assert mean_entropy(samples)[0] == 0.0
    assert entropy_of_mean(samples)[0] == pytest.approx(1.0, abs=1e-6)
    assert mutual_information(samples)[0] == pytest.approx(1.0, abs=1e-6)
    # K = 3: two of three samples say class 0, one says class 1 → mean (2/3, 1/3, 0).
    one_hot = np.eye(3)[[0, 0, 1]].reshape(3, 3, 1)
    expected = _h([2 / 3, 1 / 3]) / math.log(3)
    assert entropy_of_mean(one_hot)[0] == pytest.approx(expected, abs=1e-6)
    assert mutual_information(one_hot)[0] == pytest.approx(expected, abs=1e-6)


def test_hand_computed_binary_value():
    # Two samples p = 0.9 and p = 0.5; mean 0.7.
    samples = _binary(0.9, 0.5)
    ln2 = math.log(2)
    h_mean = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3)) / ln2
    h_09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / ln2
    h_05 = 1.0
    expected_mean_h = (h_09 + h_05) / 2
    assert entropy_of_mean(samples)[0] == pytest.approx(h_mean, abs=1e-6)  # 0.881291
    assert mean_entropy(samples)[0] == pytest.approx(expected_mean_h, abs=1e-6)  # 0.734498
    assert mutual_information(samples)[0] == pytest.approx(h_mean - expected_mean_h, abs=1e-6)
    assert h_mean - expected_mean_h == pytest.approx(0.146793, abs=1e-6)


def test_matches_per_voxel_brute_force():
    rng = np.random.default_rng(1)
    samples = rng.dirichlet([0.5, 1.0, 2.0], size=(4, 3, 5, 2))  # (S, X, Y, Z, K)
    samples = np.moveaxis(samples, -1, 1)  # → (S, K, X, Y, Z)
    ent, mi = entropy_of_mean(samples), mutual_information(samples)
    for x, y, z in itertools.product(range(3), range(5), range(2)):
        dists = [list(samples[s, :, x, y, z]) for s in range(4)]
        mean = [sum(d[c] for d in dists) / 4 for c in range(3)]
        total = _h(mean) / math.log(3)
        expected = sum(_h(d) for d in dists) / 4 / math.log(3)
        assert ent[x, y, z] == pytest.approx(total, abs=1e-6)
        assert mi[x, y, z] == pytest.approx(total - expected, abs=1e-6)
    assert np.all(mi >= 0) and np.all(mi <= ent + 1e-6)


def test_uncertainty_maps_order_and_values():
    rng = np.random.default_rng(2)
    p = rng.random((3, 1, 4, 4, 4)).astype(np.float32)
    maps = uncertainty_maps(p)
    assert UNCERTAINTY_MAPS == ("entropy", "mutual_information")
    assert tuple(maps) == UNCERTAINTY_MAPS
    np.testing.assert_array_equal(maps["entropy"], entropy_of_mean(p))
    np.testing.assert_array_equal(maps["mutual_information"], mutual_information(p))
    assert all(m.dtype == np.float32 and m.shape == (4, 4, 4) for m in maps.values())


def test_rejects_arrays_without_sample_and_class_axes():
    with pytest.raises(ValueError, match="shape"):
        entropy_of_mean(np.zeros(5))
    with pytest.raises(ValueError, match="at least one sample"):
        mutual_information(np.zeros((0, 2, 3)))


def test_docstring_examples():
    assert doctest.testmod(unc_module, extraglobs={"np": np}).failed == 0


# --- detection disagreement -------------------------------------------------------------


def _two_lesions():
    """Final prediction: lesion 1 a 2×2×2 cube, lesion 2 another 2×2×2 cube."""
    lesions = np.zeros((10, 10, 10), dtype=np.int32)
    lesions[1:3, 1:3, 1:3] = 1
    lesions[6:8, 6:8, 6:8] = 2
    return lesions


def test_disagreement_hand_case():
    lesions = _two_lesions()
    identical = lesions > 0
    shifted = identical.copy()
    shifted[1:3, 1:3, 1:3] = False
    shifted[2:4, 1:3, 1:3] = True  # lesion 1 moved one voxel along x: |∩| = 4, |∪| = 12
    missing = identical.copy()
    missing[lesions == 2] = False  # this member did not find lesion 2
    members = np.stack([identical, shifted, missing])
    out = detection_disagreement(lesions, members)
    assert set(out) == {1, 2}
    assert out[1] == pytest.approx(1 - (1 + 4 / 12 + 1) / 3)  # 2/9
    assert out[2] == pytest.approx(1 - (1 + 1 + 0) / 3)  # 1/3


def test_disagreement_diagonal_neighbour_depends_on_connectivity():
    lesions = _two_lesions()
    member = lesions > 0
    member[3, 3, 3] = True  # touches lesion 1's corner (2, 2, 2) only diagonally
    members = member[None]
    # 6-connected: a separate component, so lesion 1's best match is itself (IoU 1).
    out6 = detection_disagreement(lesions, members, connectivity=6)
    assert out6 == {1: pytest.approx(0.0), 2: pytest.approx(0.0)}
    # 26-connected: one 9-voxel component, IoU 8/9.
    out26 = detection_disagreement(lesions, members, connectivity=26)
    assert out26[1] == pytest.approx(1 - 8 / 9)
    assert out26[2] == pytest.approx(0.0)


def test_disagreement_takes_the_best_component_and_keeps_ids():
    lesions = np.zeros((8, 8, 8), dtype=np.uint16)
    lesions[5, 5, 0:5] = 3  # a 5-voxel bar; ids 1 and 2 are absent
    member = np.zeros((8, 8, 8), dtype=bool)
    member[5, 5, 0] = True  # component A: IoU 1/5
    member[5, 5, 2:7] = True  # component B: |∩| = 3, |∪| = 5 + 5 − 3 = 7
    member[0, 0, 0] = True  # far away, ignored
    out = detection_disagreement(lesions, member[None])
    assert set(out) == {3}
    assert out[3] == pytest.approx(1 - 3 / 7)
    assert detection_disagreement(np.zeros_like(lesions), member[None]) == {}
    # A member with no lesion at all: best IoU 0.
    out = detection_disagreement(lesions, np.zeros((2, 8, 8, 8), dtype=bool))
    assert out == {3: pytest.approx(1.0)}


@pytest.mark.parametrize("connectivity", [6, 26])
def test_disagreement_matches_brute_force(connectivity):
    rng = np.random.default_rng(3)
    shape = (14, 12, 10)
    structure = ndimage.generate_binary_structure(3, 1 if connectivity == 6 else 3)
    final = ndimage.binary_opening(rng.random(shape) > 0.6)
    lesions, n_lesions = ndimage.label(final, structure=structure)
    assert n_lesions >= 3
    members = np.stack([final ^ (rng.random(shape) > 0.9) for _ in range(4)])
    out = detection_disagreement(lesions, members, connectivity=connectivity)
    for i in range(1, n_lesions + 1):
        lesion = lesions == i
        best = []
        for m in members:
            comps, n = ndimage.label(m, structure=structure)
            ious = [
                np.sum(lesion & (comps == c)) / np.sum(lesion | (comps == c))
                for c in range(1, n + 1)
            ]
            best.append(max(ious, default=0.0))
        assert out[i] == pytest.approx(1 - np.mean(best), abs=1e-12)


def test_disagreement_rejects_bad_inputs():
    lesions = _two_lesions()
    with pytest.raises(ValueError, match="shape"):
        detection_disagreement(lesions, np.zeros((2, 9, 10, 10), dtype=bool))
    with pytest.raises(ValueError, match="integer"):
        detection_disagreement(lesions.astype(float), (lesions > 0)[None])
    with pytest.raises(ValueError, match="at least one member"):
        detection_disagreement(lesions, np.zeros((0, 10, 10, 10), dtype=bool))
