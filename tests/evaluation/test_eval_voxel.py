"""Voxel metrics against MONAI and MedPy, empty-case rules, global Dice, multi-class maps."""

import numpy as np
import pytest
import torch
from eval_masks import blob_mask
from medpy.metric import binary as medpy_binary
from monai.metrics import compute_confusion_matrix_metric, compute_dice, get_confusion_matrix

from lesionseg.evaluation import GlobalDice, evaluate_case, voxel_metrics
from lesionseg.evaluation.voxel import confusion, dice


def _monai_confusion(pred, ref, name):
    """MONAI's confusion-matrix metric of one binary pair."""
    p = torch.as_tensor(pred[None, None].astype(np.float32))
    r = torch.as_tensor(ref[None, None].astype(np.float32))
    matrix = get_confusion_matrix(p, r, include_background=True)
    return float(compute_confusion_matrix_metric(name, matrix).squeeze())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voxel_metrics_match_monai_and_medpy(seed):
    pred = blob_mask((24, 20, 16), 0.15, seed)
    ref = blob_mask((24, 20, 16), 0.2, seed + 10)
    m = voxel_metrics(pred, ref, voxel_volume_ml=0.0015)
    t = lambda a: torch.as_tensor(a[None, None].astype(np.float32))  # noqa: E731
    assert m["dice"] == pytest.approx(float(compute_dice(t(pred), t(ref))), abs=1e-6)
    assert m["dice"] == pytest.approx(medpy_binary.dc(pred, ref), abs=1e-6)
    assert m["precision"] == pytest.approx(_monai_confusion(pred, ref, "precision"), abs=1e-6)
    assert m["precision"] == pytest.approx(medpy_binary.precision(pred, ref), abs=1e-6)
    assert m["sensitivity"] == pytest.approx(_monai_confusion(pred, ref, "sensitivity"), abs=1e-6)
    assert m["sensitivity"] == pytest.approx(medpy_binary.recall(pred, ref), abs=1e-6)
    assert m["specificity"] == pytest.approx(_monai_confusion(pred, ref, "specificity"), abs=1e-6)
    assert m["specificity"] == pytest.approx(medpy_binary.specificity(pred, ref), abs=1e-6)
    assert m["pred_ml"] == pytest.approx(pred.sum() * 0.0015)
    assert m["ref_ml"] == pytest.approx(ref.sum() * 0.0015)
    assert m["avd_ml"] == pytest.approx(abs(int(ref.sum()) - int(pred.sum())) * 0.0015)


def test_hand_computed_counts():
    pred = np.zeros((4, 4, 4), bool)
    ref = np.zeros((4, 4, 4), bool)
    pred[0, 0, :3] = True  # 3 voxels
    ref[0, 0, 1:] = True  # 3 voxels, 2 shared
    m = voxel_metrics(pred, ref, 0.001)
    assert m["dice"] == pytest.approx(2 * 2 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(60 / 61)  # tn 60 of 61 non-reference voxels
    assert (m["tp_vox"], m["pred_vox"], m["ref_vox"]) == (2, 3, 3)


def test_empty_cases_follow_isles_brats_and_never_nan():
    empty = np.zeros((5, 5, 5), bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    both = voxel_metrics(empty, empty, 0.001)
    assert both["dice"] == both["precision"] == both["sensitivity"] == both["specificity"] == 1.0
    missed = voxel_metrics(empty, full, 0.001)  # nothing predicted
    assert missed["dice"] == 0.0 and missed["sensitivity"] == 0.0 and missed["precision"] == 0.0
    spurious = voxel_metrics(full, empty, 0.001)  # prediction without reference
    assert spurious["dice"] == 0.0 and spurious["sensitivity"] == 0.0
    assert spurious["specificity"] == pytest.approx(117 / 125)
    for m in (both, missed, spurious):
        assert not any(np.isnan(v) for v in m.values())


def test_global_dice_pools_voxels_not_cases():
    rng = np.random.default_rng(3)
    acc = GlobalDice()
    preds, refs = [], []
    for _ in range(4):
        p, r = rng.random((8, 8, 8)) > 0.7, rng.random((8, 8, 8)) > 0.6
        preds.append(p)
        refs.append(r)
        acc.add_masks(p, r)
    pooled = dice(confusion(np.stack(preds), np.stack(refs)))
    assert acc.value == pytest.approx(pooled, abs=1e-12)
    per_case_mean = np.mean([dice(confusion(p, r)) for p, r in zip(preds, refs)])
    assert acc.value != pytest.approx(per_case_mean, abs=1e-9)


def test_multiclass_per_label_matches_monai_one_hot():
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 4, size=(12, 10, 8))
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, 4, size=ref.shape))
    rows = evaluate_case(pred, ref, (1.0, 1.0, 2.0), presets=(), surface=False)
    assert [r["region"] for r in rows] == ["label1", "label2", "label3"]
    one_hot = lambda a: torch.nn.functional.one_hot(torch.as_tensor(a), 4).permute(3, 0, 1, 2)[None]  # noqa: E731
    expected = compute_dice(one_hot(pred).float(), one_hot(ref).float(), include_background=False)
    for row, value in zip(rows, expected[0].tolist()):
        assert row["dice"] == pytest.approx(value, abs=1e-6)
