"""Shifts 2022 normalised Dice and nDSC retention curves, against hand values and brute force."""

import numpy as np
import pytest

from lesionseg.evaluation.retention import (
    default_fractions,
    normalised_dice,
    retention_area,
    retention_auc,
    retention_curve,
)
from lesionseg.evaluation.voxel import confusion, dice

# --- normalised Dice --------------------------------------------------------------------


def _masks_100():
    """100 voxels, reference 10 of them; prediction with TP 8, FP 4, FN 2."""
    ref = np.zeros(100, dtype=bool)
    ref[:10] = True
    pred = np.zeros(100, dtype=bool)
    pred[2:14] = True  # voxels 2..9 are TP (8), 10..13 FP (4); 0, 1 are FN (2)
    return ref, pred


def test_ndsc_hand_values():
    ref, pred = _masks_100()
    # Shifts' r = 0.001: k = (0.999 / 0.001) · (10 / 90) = 111.
    k = 999 * 10 / 90
    assert k == pytest.approx(111.0)
    assert normalised_dice(ref, pred) == pytest.approx(16 / (16 + 111 * 4 + 2))
    # r = 0.2: k = 4 · (10 / 90) = 4/9.
    assert normalised_dice(ref, pred, r=0.2) == pytest.approx(16 / (16 + 4 / 9 * 4 + 2))
    # Works on 3D masks the same way (only counts matter).
    assert normalised_dice(ref.reshape(4, 5, 5), pred.reshape(4, 5, 5), r=0.2) == pytest.approx(
        16 / (16 + 16 / 9 + 2)
    )


def test_ndsc_empty_cases():
    empty = np.zeros((5, 5, 4), dtype=bool)
    some = empty.copy()
    some[1, 1, 1:4] = True  # 3 voxels
    assert normalised_dice(empty, empty) == 1.0  # both empty
    assert normalised_dice(empty, some) == 0.0  # empty reference: k = 1, 0 / (0 + 3 + 0)
    assert normalised_dice(some, empty) == 0.0  # nothing predicted: 0 / (0 + 0 + 3)
    assert normalised_dice(some, some) == 1.0
    # A reference filling the image: no false positive possible, 2TP / (2TP + FN).
    full = np.ones((5, 5, 4), dtype=bool)
    assert normalised_dice(full, some) == pytest.approx(6 / (6 + 97))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ndsc_is_dice_at_the_reference_load(seed):
    rng = np.random.default_rng(seed)
    ref = np.zeros(2000, dtype=bool)
    ref[rng.choice(2000, 50, replace=False)] = True  # load 50 / 2000 = 0.025
    pred = np.where(ref, rng.random(2000) > 0.2, rng.random(2000) < 0.03)  # FN and FP
    ref, pred = ref.reshape(10, 20, 10), pred.reshape(10, 20, 10)
    assert normalised_dice(ref, pred, r=0.025) == pytest.approx(dice(confusion(pred, ref)))
    c = confusion(pred, ref)
    assert c.fp > 0 and c.fn > 0
    # At the Shifts r the load 0.025 is 25 r: false positives are scaled to a scan with
    # 25× more background per lesion voxel (k = 999 · 50 / 1950 ≈ 25.6), so the score
    # drops below the Dice; with r above the load (k = 9 · 50 / 1950) it rises above.
    k = 999 * 50 / 1950
    assert normalised_dice(ref, pred) == pytest.approx(2 * c.tp / (2 * c.tp + k * c.fp + c.fn))
    assert normalised_dice(ref, pred) < dice(c) < normalised_dice(ref, pred, r=0.1)


def test_ndsc_rejects_bad_inputs():
    ref, pred = _masks_100()
    with pytest.raises(ValueError, match="shape"):
        normalised_dice(ref, pred[:50])
    with pytest.raises(ValueError, match="r must"):
        normalised_dice(ref, pred, r=0.0)


# --- retention curves -------------------------------------------------------------------


def _brute_force_curve(ref, pred, unc, fractions, r):
    """One full nDSC per fraction, on an explicitly built partly-referred prediction."""
    ref, pred = ref.ravel(), pred.ravel()
    order = np.argsort(unc.ravel(), kind="stable")
    scores = []
    for f in fractions:
        kept = order[: int(len(order) * f)]
        mixed = ref.copy()
        mixed[kept] = pred[kept]
        scores.append(normalised_dice(ref, mixed, r=r))
    return np.array(scores)


def test_default_fractions_are_the_shifts_ones():
    f = default_fractions()
    assert f.shape == (200,)
    assert f[0] == 0.0 and f[-1] == 1.0
    assert np.all(np.diff(f) > 0)
    np.testing.assert_allclose(f, np.log(np.arange(1, 201)) / np.log(200))
    # Denser at high retention: the last step is much smaller than the first.
    assert f[-1] - f[-2] < (f[1] - f[0]) / 50


@pytest.mark.parametrize("r", [0.001, 0.05])
def test_retention_curve_matches_brute_force(r):
    rng = np.random.default_rng(4)
    shape = (9, 8, 7)
    ref = rng.random(shape) < 0.15
    pred = ref ^ (rng.random(shape) < 0.1)
    unc = np.round(rng.random(shape), 1)  # many ties, decided by voxel order
    fractions, scores = retention_curve(ref, pred, unc, r=r)
    np.testing.assert_array_equal(fractions, default_fractions())
    expected = _brute_force_curve(ref, pred, unc, fractions, r)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert scores[0] == 1.0  # everything referred
    assert scores[-1] == pytest.approx(normalised_dice(ref, pred, r=r))  # nothing referred
    # Given fractions, in any order.
    given = np.array([1.0, 0.3, 0.0, 0.77])
    _, scores = retention_curve(ref, pred, unc, fractions=given, r=r)
    np.testing.assert_allclose(scores, _brute_force_curve(ref, pred, unc, given, r), atol=1e-12)


def test_hand_computed_ten_voxel_curve():
    # voxel:  0    1    2    3    4    5    6    7    8    9
    ref = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    pred = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], dtype=bool)  # TP 0; FN 1; FP 2, 9
    unc = np.array([0.0, 0.6, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.1])
    # Stable ascending order: 0, 3, 9, 4, 5, 6, 2, 7, 1, 8 (ties 3 < 9 and 2 < 7 by index).
    fractions = np.array([0.0, 0.25, 0.5, 0.75, 1.0])  # keep 0, 2, 5, 7, 10 voxels
    r = 0.1
    k = (0.9 / 0.1) * (2 / 8)  # = 2.25
    expected = [
        1.0,  # all referred
        1.0,  # keep {0, 3}: both right; rest = reference
        4 / (4 + k * 1),  # keep {0, 3, 9, 4, 5}: FP 9; TP 0 and referred 1 → TP 2
        4 / (4 + k * 2),  # keep also {6, 2}: FP 9 and 2 (not 7: the tie with 2 goes by index)
        2 / (2 + k * 2 + 1),  # all kept: TP 1, FP 2, FN 1
    ]
    _, scores = retention_curve(ref, pred, unc, fractions=fractions, r=r)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert scores[2] == pytest.approx(0.64) and scores[4] == pytest.approx(2 / 7.5)
    # R-AAC by the trapezoidal rule, by hand.
    area = 0.25 * sum((a + b) / 2 for a, b in zip(expected[:-1], expected[1:]))
    assert retention_auc(fractions, scores) == pytest.approx(1 - area)
    assert retention_area(ref, pred, unc, fractions=fractions, r=r) == pytest.approx(1 - area)


def test_retention_auc_hand_values():
    assert retention_auc([0.0, 1.0], [1.0, 0.0]) == pytest.approx(0.5)
    assert retention_auc([0.0, 0.5, 1.0], [1.0, 1.0, 0.5]) == pytest.approx(1 - (0.5 + 0.375))
    assert retention_auc([0.0, 1.0], [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="non-decreasing"):
        retention_auc([0.0, 1.0, 0.5], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        retention_auc([0.0, 1.0], [1.0])


def _blob_case(seed=5):
    """A 20³ case: a ball of lesion, a prediction with boundary and scattered errors."""
    rng = np.random.default_rng(seed)
    grid = np.indices((20, 20, 20)) - 9.5
    ref = (grid**2).sum(0) < 6.0**2
    pred = (grid**2).sum(0) < 5.3**2  # misses the rim
    pred |= rng.random(ref.shape) < 0.002  # scattered false positives
    return ref, pred, rng


def test_perfect_prediction_has_zero_raac():
    ref, _, rng = _blob_case()
    assert retention_area(ref, ref.copy(), rng.random(ref.shape)) == 0.0
    # And an empty case predicted empty.
    empty = np.zeros((6, 6, 6), dtype=bool)
    assert retention_area(empty, empty, rng.random(empty.shape)) == 0.0


def test_errors_ranked_last_give_the_lowest_raac():
    ref, pred, rng = _blob_case()
    errors = ref != pred
    assert 0 < errors.sum() < errors.size
    # Errors get uncertainties in [1, 2), correct voxels in [0, 1).
    informed = errors + rng.random(ref.shape)
    good = retention_area(ref, pred, informed)
    reverse = retention_area(ref, pred, -informed)
    random = retention_area(ref, pred, rng.random(ref.shape))
    assert good < random < reverse
    # With the errors last, the curve is perfect as long as every error is referred.
    fractions, scores = retention_curve(ref, pred, informed)
    safe = np.floor(fractions * ref.size) <= ref.size - errors.sum()
    np.testing.assert_array_equal(scores[safe], 1.0)
    assert scores[~safe].max() < 1.0


def test_retention_curve_rejects_bad_inputs():
    ref, pred, rng = _blob_case()
    unc = rng.random(ref.shape)
    with pytest.raises(ValueError, match="uncertainty shape"):
        retention_curve(ref, pred, unc[:5])
    bad = unc.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retention_curve(ref, pred, bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        retention_curve(ref, pred, unc, fractions=[0.0, 1.5])


def test_evaluate_reports_the_ndsc_of_each_case():
    """``lesionseg evaluate``'s ``ndsc`` column is the nDSC of the whole image."""
    from lesionseg.evaluation.api import evaluate_masks

    rng = np.random.default_rng(3)
    ref = rng.random((12, 12, 12)) < 0.02
    pred = ref.copy()
    pred[0, :3, :3] = True  # some false positives
    pred[ref & (rng.random(ref.shape) < 0.3)] = False  # some misses
    metrics = evaluate_masks(pred, ref, 1.0, presets=(), surface=False)
    assert metrics["ndsc"] == pytest.approx(normalised_dice(ref, pred))
    assert metrics["ndsc"] != pytest.approx(metrics["dice"])


def test_evaluate_adds_the_retention_area_when_uncertainty_maps_exist(tmp_path):
    """A predictions folder of ``predict --save-uncertainty``: its maps are no cases, and
    each row gets the R-AAC of the entropy map (the first of the 4D file)."""
    import nibabel as nib

    from lesionseg.evaluation.api import evaluate

    rng = np.random.default_rng(4)
    ref = (rng.random((10, 10, 10)) < 0.05).astype(np.uint8)
    pred = ref.copy()
    pred[0, 0, :4] = 1
    entropy = rng.random(ref.shape).astype(np.float32)
    maps = np.stack([entropy, entropy * 0], axis=-1)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    affine = np.eye(4)
    nib.save(nib.Nifti1Image(pred, affine), tmp_path / "pred" / "c_seg.nii.gz")
    nib.save(nib.Nifti1Image(maps, affine), tmp_path / "pred" / "c_uncertainty.nii.gz")
    nib.save(
        nib.Nifti1Image(pred[..., None].repeat(2, -1), affine),
        tmp_path / "pred" / "c_members.nii.gz",
    )
    nib.save(nib.Nifti1Image(ref, affine), tmp_path / "ref" / "c.nii.gz")
    result = evaluate(tmp_path / "pred", tmp_path / "ref", presets=(), surface=False)
    (row,) = result.rows
    assert row["case"] == "c"
    assert row["r_aac"] == pytest.approx(retention_area(ref > 0, pred > 0, entropy))
